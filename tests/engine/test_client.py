"""The engine process: jobs, progress, cancel (soft and hard), failures and crashes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import Cancelled, CTVolume
from napari_pneumoseg.engine import Engine, EngineError, Request, SegmentRequest, SelfTestRequest, TrainRequest


@pytest.fixture(scope="module")
def engine():
    eng = Engine(device="cpu", cancel_grace=3.0)
    eng.start()
    yield eng
    eng.stop()
    assert not eng.alive


def test_engine_runs_jobs_with_progress_and_stays_alive(engine):
    info = engine.wait_ready()
    assert info["tensorflow"].startswith("2.") and any("CPU" in d for d in info["devices"])
    seen = []
    result = engine.call(SelfTestRequest(steps=4, step_s=0.01), progress=lambda *a: seen.append(a))
    assert result["steps"] == 4 and result["pid"] == info["pid"]
    assert [s[0] for s in seen] == [1, 2, 3, 4] and seen[-1][1] == 4
    # Same process serves the next job (model caches survive between jobs).
    assert engine.call(SelfTestRequest(steps=1, step_s=0))["pid"] == info["pid"]


def test_a_failing_job_is_a_clear_error_and_the_engine_survives(engine):
    pid = engine.wait_ready()["pid"]
    with pytest.raises(EngineError, match="self-test failure requested"):
        engine.call(SelfTestRequest(steps=3, fail=1))
    assert engine.call(SelfTestRequest(steps=1, step_s=0))["pid"] == pid


def test_unknown_job_and_unknown_parameters_are_refused(engine):
    class Nope(Request):
        kind = "nope"

    with pytest.raises(EngineError, match="unknown engine job 'nope'"):
        engine.call(Nope())
    with pytest.raises(TypeError, match="engine Request"):
        engine.call({"kind": "selftest"})
    with pytest.raises(ValueError, match=r"unknown selftest job parameters: \['bogus'\]"):
        SelfTestRequest.from_params({"steps": 1, "bogus": 2})


def test_requests_cross_as_plain_data_and_come_back_equal():
    ct = CTVolume(np.zeros((2, 3, 4), np.float32), spacing=(2.5, 0.7, 0.7), origin=(1.0, 2.0, 3.0))
    request = SegmentRequest.for_ct(ct, ct_file="/x/ct.npy", out_dir="/x", model="/m.pnxmodel",
                                    threshold=0.4, crop_chest=False)
    params = request.as_params()
    assert params["spacing"] == (2.5, 0.7, 0.7) and params["direction"] == ct.direction.tolist()
    assert SegmentRequest.from_params(params) == request
    train = TrainRequest(out="/m.pnxmodel", epochs=3, patch_size=None)
    assert train.train_options() == {"epochs": 3, "overwrite": False}


def _drain_after_cancel(engine, gen, steps: list, limit: int) -> None:
    """Run a cancelled job's generator to its end, appending each progress ``done`` to ``steps``.

    A hang guard, not a speed check: a job still reporting ``limit`` steps after the
    cancel is not being stopped, so the engine is killed and the test fails there
    instead of waiting for the job to finish.
    """
    for item in gen:
        if item[0] == "progress":
            steps.append(item[1])
            if len(steps) >= limit:
                gen.close()
                engine._kill()
                pytest.fail(f"the job ran on for {len(steps)} steps after the cancel")


def test_cancel_stops_a_job_between_steps(engine):
    pid = engine.wait_ready()["pid"]
    # Steps long next to process wake-ups (1 s), so "stopped within two steps" holds on a
    # loaded machine; 200 of them if the cancel were ignored.
    total = 200
    gen = engine.run(SelfTestRequest(steps=total, step_s=1.0))
    assert next(gen)[:3] == ("progress", 1, total)
    engine.cancel()
    after: list[int] = []
    with pytest.raises(Cancelled, match="cancelled by the user"):  # stopped by itself, not killed
        _drain_after_cancel(engine, gen, after, limit=total // 4)
    # At most the step running when the cancel arrived, and one more, finished after it.
    assert len(after) <= 2 and after == list(range(2, 2 + len(after)))
    assert engine.alive and engine.call(SelfTestRequest(steps=1, step_s=0))["pid"] == pid


def test_hard_cancel_kills_a_job_that_ignores_cancel_and_engine_restarts(engine):
    old = engine.wait_ready()["pid"]
    total = 1000  # 50 s of job against the engine's 3 s grace
    gen = engine.run(SelfTestRequest(steps=total, step_s=0.05, ignore_cancel=True))
    assert next(gen)[:3] == ("progress", 1, total)
    engine.cancel()
    after: list[int] = []
    with pytest.raises(Cancelled, match="engine was stopped"):
        _drain_after_cancel(engine, gen, after, limit=total // 4)
    assert not engine.alive
    # The job ignored the cancel during the grace and was killed far from its end.
    assert after == list(range(2, 2 + len(after))) and len(after) < total // 4
    assert engine.call(SelfTestRequest(steps=1, step_s=0))["pid"] != old


def test_a_crash_mid_job_is_a_clear_error_not_a_hang(engine):
    engine.wait_ready()
    with pytest.raises(EngineError, match="stopped unexpectedly during the job"):
        engine.call(SelfTestRequest(steps=10, step_s=0.05, crash=2))
    assert not engine.alive
    assert engine.call(SelfTestRequest(steps=1, step_s=0))["steps"] == 1


def test_a_killed_engine_is_a_clear_error(engine):
    engine.wait_ready()
    gen = engine.run(SelfTestRequest(steps=100, step_s=0.05))
    next(gen)
    engine._proc.kill()
    with pytest.raises(EngineError, match="stopped unexpectedly"):
        for _ in gen:
            pass


def test_events_reach_the_client(engine):
    events = []
    engine.call(SelfTestRequest(steps=3, step_s=0, events=True), event=events.append)
    assert events == [{"step": 1}, {"step": 2}, {"step": 3}]

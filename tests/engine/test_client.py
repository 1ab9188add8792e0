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
    assert train.train_options() == {"epochs": 3, "resume": False, "overwrite": False}


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


def test_a_second_job_while_one_runs_is_refused_not_interleaved(engine):
    from napari_pneumoseg.engine import EngineBusy

    engine.wait_ready()
    first = engine.run(SelfTestRequest(steps=6, step_s=0.02))
    assert next(first)[0] == "progress"  # the first job holds the engine
    with pytest.raises(EngineBusy, match="already running a selftest job"):
        engine.call(SelfTestRequest(steps=1, step_s=0))
    steps = [item[1] for item in first if item[0] == "progress"]  # the first job's messages, all of them
    assert steps == [2, 3, 4, 5, 6]
    assert engine.call(SelfTestRequest(steps=2, step_s=0))["steps"] == 2  # free again


def _kill_at(engine, gen, when):
    """Run ``gen`` until ``when(item)``, then SIGKILL the engine; the EngineError that follows."""
    for item in gen:
        if when(item):
            engine._proc.kill()
            break
    with pytest.raises(EngineError, match="stopped unexpectedly") as info:
        for _ in gen:
            pass
    return info.value


def test_the_engine_killed_mid_segment_then_the_next_segment_works(engine, tiny_model_path, tmp_path):
    from napari_pneumoseg.engine import JobFiles

    ct = CTVolume(np.random.default_rng(0).normal(-700, 200, (48, 96, 96)).astype(np.float32),
                  spacing=(2.5, 1.0, 1.0))
    with JobFiles() as files:
        request = SegmentRequest.for_ct(ct, ct_file=files.save("ct", ct.hu), out_dir=str(files.path),
                                        model=str(tiny_model_path), batch_size=2, crop_chest=False,
                                        skip_slices=False)
        _kill_at(engine, engine.run(request), lambda item: item[0] == "progress" and item[1] >= 2)
        assert not engine.alive
        result = engine.call(request)
        assert np.load(result["mask"]).shape == ct.shape


def test_the_engine_killed_mid_train_keeps_the_best_model_and_resumes(engine, tmp_path):
    from napari_pneumoseg.engine import JobFiles
    from napari_pneumoseg.model import load_model

    rng = np.random.default_rng(0)
    out = tmp_path / "m.pnxmodel"
    with JobFiles() as files:
        cases = []
        for c in range(4):
            hu = np.full((6, 64, 64), 40, np.float32)
            hu[:, 8:56, 30:58] = -850
            mask = np.zeros(hu.shape, np.uint8)
            mask[:, 10 + c:22 + c, 30:58] = 1
            hu[mask == 1] = -1000
            hu += rng.normal(0, 15, hu.shape).astype(np.float32)
            cases.append({"ct": files.save(f"ct{c}", hu), "mask": files.save(f"m{c}", mask), "spacing": [2.5, 1, 1]})
        request = TrainRequest(out=str(out), cases=cases, epochs=3, batch_size=4, patch_size=32,
                               backbone="resnet18", steps_per_epoch=2, patience=50)
        error = _kill_at(engine, engine.run(request), lambda item: item[0] == "event" and item[1]["epoch"] == 1)
        assert "stopped unexpectedly" in str(error)
        assert load_model(out).provenance["result"]["epochs_run"] in (1, 2)  # the best so far, whole
        result = engine.call(TrainRequest(**{**request.as_params(), "resume": True}))
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert result["model_path"] == str(out) and result["stopped"] == "max epochs"

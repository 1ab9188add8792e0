"""BackgroundJob: a widget's outcome is always its final state, whatever arrives late."""

from __future__ import annotations

import pytest

from napari_pneumoseg._napari._common import BackgroundJob


def _run(qtbot, job_fn):
    log = []
    job = BackgroundJob(job_fn, on_progress=lambda item: log.append(("progress", item)),
                        on_result=lambda value: log.append(("result", value)),
                        on_error=lambda exc: log.append(("error", str(exc))),
                        on_done=lambda: log.append(("done",)))
    qtbot.waitUntil(lambda: job.done, timeout=30_000)
    return job, log


def test_progress_in_order_then_the_result_then_done_and_nothing_after(qtbot):
    def work():
        for k in range(50):
            yield ("progress", k, 50, f"{k}/50")
        return "the answer"

    job, log = _run(qtbot, work)
    assert [e[1][1] for e in log[:-2]] == list(range(50))
    assert log[-2:] == [("result", "the answer"), ("done",)]
    job._progress(("progress", 50, 50, "late"))  # a message delivered after the outcome
    job._result("a second answer")
    job._error(ValueError("late"))
    assert log[-1] == ("done",)


def test_a_plain_function_runs_too_and_its_runtime_error_is_reported(qtbot):
    job, log = _run(qtbot, lambda: 42)
    assert log == [("result", 42), ("done",)]

    def broken():
        raise RuntimeError("numpy said no")

    job, log = _run(qtbot, broken)  # superqt alone would end silently, with no finished signal
    assert log == [("error", "numpy said no"), ("done",)]


@pytest.mark.parametrize("exc", [ValueError("bad input"), RuntimeError("engine died")])
def test_an_error_is_the_outcome_and_late_progress_is_dropped(qtbot, exc):
    def work():
        yield ("progress", 1, 2, "1/2")
        raise exc

    job, log = _run(qtbot, work)
    assert log == [("progress", ("progress", 1, 2, "1/2")), ("error", str(exc)), ("done",)]
    job._progress(("progress", 2, 2, "late"))
    assert log[-1] == ("done",)


def test_an_outcome_delivered_inside_a_progress_handler_still_comes_last(qtbot):
    """napari's progress bar re-enters Qt's event loop from inside a progress handler.

    The result can then arrive in the middle of the handler; it must be applied after
    the handler has finished (a status line set at the handler's end must not win).
    """
    from qtpy.QtWidgets import QApplication

    log, state = [], {}

    def on_progress(item):
        log.append(("progress", item[1]))
        if item[1] == 2:  # the last one: let Qt deliver the (already queued) outcome now
            for _ in range(500):
                QApplication.processEvents()
                if state["job"].final:
                    break
                qtbot.wait(10)
            state["final_inside"] = state["job"].final
        log.append(("progress end", item[1]))

    def work():
        yield ("progress", 1, 2, "")
        yield ("progress", 2, 2, "")
        return "answer"

    state["job"] = job = BackgroundJob(work, on_progress=on_progress,
                                       on_result=lambda v: log.append(("result", v)),
                                       on_error=lambda e: log.append(("error", e)),
                                       on_done=lambda: log.append(("done",)))
    qtbot.waitUntil(lambda: job.done, timeout=30_000)
    assert state["final_inside"]  # the outcome really arrived inside the handler
    assert log == [("progress", 1), ("progress end", 1), ("progress", 2), ("progress end", 2),
                   ("result", "answer"), ("done",)]

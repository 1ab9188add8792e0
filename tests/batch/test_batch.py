"""batch.run on a 2-worker LocalCluster: refusals, resume, a worker killed mid-run, Ctrl-C, CLI-equal masks."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from batch_tree import CORRUPT, N_GOOD, assert_no_partial_files

from napari_pneumoseg.batch import discover, read_status, run

pytestmark = pytest.mark.timeout(300)


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def status_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tree_template, client, tmp_path_factory):
    """The 5-study tree run once with pleural air; (tree, out, summary)."""
    root = Path(shutil.copytree(tree_template, tmp_path_factory.mktemp("run") / "export"))
    out = root.parent / "out"
    summary = run(root, out, method="pleural-air", scheduler=client)
    return root, out, summary


def test_discover_finds_each_series_once_and_skips_what_is_not_ct(tree):
    tasks, notes = discover(tree)
    assert len(tasks) == N_GOOD + 1
    assert len({t.folder for t in tasks}) == len(tasks)
    assert all(len(t.files) == 24 and t.refusal is None for t in tasks)
    assert any("not DICOM" in n and "info.json" in n for n in notes)  # the phantoms' truth and info files
    again, _ = discover(tree)
    assert [t.fingerprint for t in again] == [t.fingerprint for t in tasks]
    os.utime(tasks[0].files[3], ns=(0, 0))
    changed, _ = discover(tree)
    assert [t.fingerprint != u.fingerprint for t, u in zip(tasks, changed)] == [True] + [False] * N_GOOD


def test_five_studies_one_corrupt_four_done_one_refused_with_the_readers_reason(first_run):
    root, out, summary = first_run
    assert (summary.total, summary.done, summary.refused, summary.failed) == (5, 4, 1, 0)
    lines = status_lines(out)
    assert sorted(rec["status"] for rec in lines) == ["done"] * 4 + ["refused"]
    refused = next(rec for rec in lines if rec["status"] == "refused")
    assert "truncated" in refused["reason"] and refused["source"].endswith(CORRUPT + "/ct")
    rows = results(out)
    assert len(rows) == 4
    for row in rows:
        assert row["method"] == "pleural-air" and int(row["slices"]) == 24
        assert float(row["volume_ml"]) > 0 and row["left_pct_hemithorax"] != ""
        assert (out / row["mask"]).is_file()
        assert row["mask"].startswith(f"{row['study_instance_uid']}/{row['series_instance_uid']}/")
    assert_no_partial_files(out)


def test_a_rerun_does_no_work(first_run):
    root, out, _ = first_run
    masks = {p: p.stat().st_mtime_ns for p in out.rglob("pneumothorax.seg.nrrd")}
    before = (out / "status.jsonl").read_text(), (out / "results.csv").read_text()
    summary = run(root, out, method="pleural-air", scheduler="tcp://192.0.2.1:1")  # never contacted
    assert (summary.skipped, summary.submitted, summary.done) == (5, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("pneumothorax.seg.nrrd")} == masks
    assert ((out / "status.jsonl").read_text(), (out / "results.csv").read_text()) == before


def test_the_batch_masks_equal_the_single_study_commands(first_run, tmp_path, capsys):
    from napari_pneumoseg import read_ct, read_mask
    from napari_pneumoseg.cli import main

    root, out, _ = first_run
    for row in results(out):
        rec = json.loads((out / row["mask"]).with_name("result.json").read_text())
        single = tmp_path / f"{row['series_instance_uid']}.seg.nrrd"
        assert main(["segment", rec["source"], "--method", "pleural-air", "--out", str(single)]) == 0
        ct = read_ct(rec["source"])
        np.testing.assert_array_equal(read_mask(out / row["mask"], like=ct), read_mask(single, like=ct))


def test_a_changed_study_is_redone_and_only_it(tree, client):
    out = tree.parent / "out"
    run(tree, out, method="pleural-air", scheduler=client)
    task = next(t for t in discover(tree)[0] if CORRUPT not in t.files[0])
    os.utime(task.files[0], ns=(1, 1))
    summary = run(tree, out, method="pleural-air", scheduler=client)
    assert (summary.skipped, summary.submitted, summary.done) == (4, 1, 1)
    assert summary.records[0]["folder"] == task.folder
    lines = status_lines(out)
    assert len(lines) == 5 and len({rec["folder"] for rec in lines}) == 5  # one line per series
    assert len(results(out)) == 4
    summary = run(tree, out, method="pleural-air", scheduler=client, measure=True)  # other settings: all redone
    assert summary.submitted == 5
    assert {"left_class_bts", "right_rim_depth_mm"} <= set(results(out)[0])


def _kill_once(marker: str, target: str):
    """A worker plugin that kills its worker process when ``target``'s task starts, the first time only."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnce(WorkerPlugin):
        name = "kill-once"

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and target in str(key) and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)

    return KillOnce()


def test_a_worker_killed_mid_run_still_every_study_done(tree, client, tmp_path):
    marker = tmp_path / "killed"
    victim = next(t for t in discover(tree)[0] if CORRUPT not in t.files[0])
    client.register_plugin(_kill_once(str(marker), victim.series_uid))
    try:
        summary = run(tree, tree.parent / "out", method="pleural-air", scheduler=client)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert marker.exists()  # the victim's worker did die
    assert (summary.done, summary.refused, summary.failed) == (N_GOOD, 1, 0)
    assert read_status(tree.parent / "out" / "status.jsonl")[victim.folder]["status"] == "done"
    assert_no_partial_files(tree.parent / "out")


def test_ctrl_c_in_the_driver_leaves_no_half_written_file_and_a_rerun_finishes(tree):
    out = tree.parent / "out"
    seen = []

    def interrupt(done, total, text):
        seen.append(done)
        if done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tree, out, method="pleural-air", workers=2, progress=interrupt)
    assert seen[-1] == 1
    assert_no_partial_files(out)
    finished = status_lines(out)
    assert len(finished) == 1 and len(results(out)) == (finished[0]["status"] == "done")
    summary = run(tree, out, method="pleural-air", workers=2)
    assert summary.skipped == 1 and summary.submitted == 4
    assert sorted(rec["status"] for rec in status_lines(out)) == ["done"] * 4 + ["refused"]
    assert len(results(out)) == 4
    assert_no_partial_files(out)


def test_bad_arguments_fail_before_any_work(tree, tmp_path):
    with pytest.raises(ValueError, match="model file is required"):
        run(tree, tmp_path / "o", method="network")
    with pytest.raises(FileNotFoundError):
        run(tree, tmp_path / "o", method="network", model=tmp_path / "missing.pnxmodel")
    with pytest.raises(ValueError, match="uses no model"):
        run(tree, tmp_path / "o", method="pleural-air", model=tmp_path / "m.pnxmodel")
    with pytest.raises(ValueError, match="method"):
        run(tree, tmp_path / "o", method="magic")
    with pytest.raises(ValueError):
        run(tree, tmp_path / "o", method="pleural-air", format="png")
    assert not (tmp_path / "o").exists()


def test_network_method_loads_the_model_once_per_worker_and_matches_segment(tree, client, tiny_model_path,
                                                                             tmp_path):
    from napari_pneumoseg import read_ct, read_mask
    from napari_pneumoseg.cli import main

    out = tmp_path / "net"
    summary = run(tree, out, method="network", model=tiny_model_path, scheduler=client)
    assert (summary.done, summary.refused, summary.failed) == (N_GOOD, 1, 0)

    def loads():  # runs on each worker
        from napari_pneumoseg.batch import worker

        return os.getpid(), worker.LOADS

    per_pid = dict(client.run(loads).values())
    done = [rec for rec in status_lines(out) if rec["status"] == "done"]
    used = {int(rec["worker"].rsplit(":", 1)[1]) for rec in done}
    assert used <= set(per_pid) and all(per_pid[pid] == 1 for pid in used)  # once, whatever the task count
    assert len(done) > len(used)  # so some worker reused its model
    rows = results(out)
    assert all(r["method"] == "network" and r["model"] == str(tiny_model_path.resolve()) for r in rows)
    rec = json.loads((out / rows[0]["mask"]).with_name("result.json").read_text())
    single = tmp_path / "single.seg.nrrd"
    assert main(["segment", rec["source"], "--model", str(tiny_model_path), "--out", str(single)]) == 0
    ct = read_ct(rec["source"])
    np.testing.assert_array_equal(read_mask(out / rows[0]["mask"], like=ct), read_mask(single, like=ct))


def test_the_batch_command_on_a_running_scheduler(tree, client, tmp_path, capsys):
    from napari_pneumoseg.cli import main

    out = tmp_path / "cli"
    args = ["batch", str(tree), "--out", str(out), "--method", "pleural-air", "--format", "nii.gz",
            "--scheduler", client.scheduler.address]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"5 series: 0 up to date, {N_GOOD} done, 1 refused, 0 failed" in captured.out
    assert "Dask dashboard:" in captured.err and "series" in captured.err
    assert len(list(out.rglob("pneumothorax.nii.gz"))) == N_GOOD
    assert main(args) == 0 and "5 series: 5 up to date, 0 done" in capsys.readouterr().out
    assert main(["batch", str(tree), "--out", str(tmp_path / "x")]) == 2
    assert "--method pleural-air" in capsys.readouterr().err and not (tmp_path / "x").exists()

"""The reader against the hostile corpus of tests/ct/hostile_corpus.py: cases, read, refused, crashes, hangs.

Usage:
    python benchmarks/fuzz_reader.py [--shared ../shared] [--work fuzz-work] [--hang-seconds 30]
        [--messages]

Prints one line per kind of case (lone damaged slice, damaged slice in a series, not DICOM,
pydicom's corpus), then the totals, the slowest case and the largest allocation; with
``--messages`` also what the refusal says for a few typical cases. One run; figures go to
benchmarks/README.md and the issue's closing note.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ct"))

from hostile_corpus import attempt, not_dicom_cases, pydicom_cases, series_cases  # noqa: E402

TYPICAL = ("lone-truncated-half", "lone-rescale-slope-nan", "series-columns-0", "zip-named-dcm",
           "lone-frames-lie-1000", "missing-path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--work", default=None)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--messages", action="store_true")
    args = parser.parse_args()
    chest = Path(args.shared) / "data" / "real" / "chest_ct_tcia_A0001_5mm"
    work = Path(args.work or tempfile.mkdtemp(prefix="fuzz-reader-"))
    groups = {"lone slice, damaged or hostile tags": [c for c in series_cases(chest) if c.name.startswith("lone-")],
              "one such slice in a 4-slice series": [c for c in series_cases(chest) if c.name.startswith("series-")],
              "not DICOM, links, missing paths": not_dicom_cases(chest),
              "pydicom's test files, each alone": pydicom_cases()}
    outcomes = []
    print("| cases | n | read | refused | crashes | hangs | contract breaches | slowest s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, cases in groups.items():
        got = [attempt(c, work) for c in cases]
        outcomes += got
        n = Counter(o.status for o in got)
        print(f"| {label} | {len(got)} | {n['read']} | {n['refused']} | {n['crash']} | "
              f"{sum(o.seconds > args.hang_seconds for o in got)} | {sum(bool(o.problems) for o in got)} | "
              f"{max(o.seconds for o in got):.2f} | {max(o.peak_mb for o in got):.0f} |", flush=True)
    n = Counter(o.status for o in outcomes)
    print(f"| **all** | {len(outcomes)} | {n['read']} | {n['refused']} | {n['crash']} | "
          f"{sum(o.seconds > args.hang_seconds for o in outcomes)} | {sum(bool(o.problems) for o in outcomes)} | "
          f"{max(o.seconds for o in outcomes):.2f} | {max(o.peak_mb for o in outcomes):.0f} |")
    print(f"total {sum(o.seconds for o in outcomes):.1f} s of reading")
    for o in outcomes:
        if o.problems:
            print(f"BREACH {o.case}: {'; '.join(o.problems)[:400]}")
    if args.messages:
        by_name = {o.case: o for o in outcomes}
        for name in TYPICAL:
            o = by_name[name]
            print(f"- {name} ({o.status}): {o.message.replace(str(work) + '/', '')[:600]}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

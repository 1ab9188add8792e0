"""The ``pneumoseg`` command line: the plugin's work for scripts and batch jobs."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence


class TextProgress:
    """A one-line text progress bar for ``progress(done, total, text)`` callbacks."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, text: str = "") -> None:
        frac = done / total if total else 0.0
        filled = int(round(frac * self.width))
        elapsed = time.monotonic() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {100 * frac:5.1f}% {elapsed:6.1f}s {text[:40]:<40}")
        if total and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _cmd_info(args) -> int:
    from .ct import read_ct
    from .ct.air import internal_air_mask

    ct = read_ct(args.ct, series_uid=args.series, progress=TextProgress("reading"))
    meta = ct.metadata
    print(f"CT: {args.ct}")
    print(f"  series      {meta.get('series_instance_uid') or '(no UID)'} {meta.get('series_description', '')}")
    print(f"  shape z,y,x {ct.shape}")
    print(f"  spacing mm  {tuple(round(s, 4) for s in ct.spacing)} (z from slice positions)")
    print(f"  origin LPS  {tuple(round(o, 2) for o in ct.origin)}")
    print(f"  slice axis  {[round(float(v), 3) for v in ct.direction[0]]} (LPS)")
    print(f"  HU range    {ct.hu.min():.0f} .. {ct.hu.max():.0f}")
    air = internal_air_mask(ct.hu)
    print(f"  air inside the body (HU < -400): {air.sum() * ct.voxel_volume_ml:.1f} mL")
    for w in ct.warnings:
        print(f"  warning: {w}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumoseg", description="Find and measure pneumothorax on chest CT."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="read a CT series and print its geometry and air volume")
    info.add_argument("ct", help="DICOM folder or file")
    info.add_argument("--series", default=None, help="SeriesInstanceUID to read")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; user errors print one clear line and exit 2, never a traceback."""
    from .ct import CTReadError
    from .progress import Cancelled

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CTReadError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"\npneumoseg: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("\npneumoseg: cancelled; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

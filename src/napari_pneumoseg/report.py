"""One self-contained HTML report of a pneumothorax: numbers, size classes, key images, method, warnings.

:func:`write_report` is what ``pneumoseg report`` and the Measure widget's *Save report*
call. The file has no outside references (images are embedded as PNG data), opens in
any browser and prints to PDF from one without losing its layout (print styles keep
tables and figures whole on a page).

Images follow the radiological convention: axial slices seen from the feet (the
patient's right on the image's left, anterior up for a supine patient), coronal
reformats seen from the front (head up). The pneumothorax is outlined in orange, the
ground truth (if given) in green, and each measured distance is drawn as a cyan line.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .ct.frame import patient_frame
from .io.atomic import write_text_atomic
from .measure import Measurement, measure
from .measure.sizing import DISAGREE, RULES, SIDES
from .progress import check_cancel

#: Identifiers a report may show, by name: (DICOM keyword, label). None are shown unless asked for.
IDENTIFIERS = {
    "patient_name": ("PatientName", "Patient name"),
    "patient_id": ("PatientID", "Patient ID"),
    "birth_date": ("PatientBirthDate", "Birth date"),
    "sex": ("PatientSex", "Sex"),
    "study_date": ("StudyDate", "Study date"),
    "accession": ("AccessionNumber", "Accession number"),
    "study": ("StudyDescription", "Study"),
    "institution": ("InstitutionName", "Institution"),
}

#: HU window of the images (lung window).
WINDOW = (-1350.0, 150.0)
_PTX, _TRUTH, _LINE = "#ff8c00", "#33cc33", "#00e5ff"

_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1000px; color: #111; }
h1 { font-size: 22px; margin-bottom: 2px; } h2 { font-size: 17px; margin: 22px 0 6px; border-bottom: 1px solid #bbb; }
.sub { color: #555; font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; page-break-inside: avoid; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.large { background: #ffd9cc; font-weight: bold; } .small { background: #e3f4e3; }
figure { display: inline-block; margin: 6px 8px 6px 0; page-break-inside: avoid; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: 12px; color: #333; max-width: 480px; }
.images figure img { width: 470px; }
ul.warn li { color: #8a4b00; font-size: 13px; } .note { font-size: 12px; color: #444; }
@media print { body { margin: 0; max-width: none; } h2 { page-break-after: avoid; }
  .images figure img { width: 84mm; } }
@page { size: A4; margin: 14mm; }
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _identifiers(ct, show: Sequence[str]) -> list[tuple[str, str]]:
    """(label, value) of the identifiers asked for, from the first DICOM file's header."""
    unknown = [s for s in show if s not in IDENTIFIERS]
    if unknown:
        raise ValueError(f"unknown identifier(s) {', '.join(unknown)}; choose from {', '.join(IDENTIFIERS)}")
    if not show:
        return []
    header = None
    files = (ct.metadata or {}).get("files") or []
    if files:
        import pydicom

        try:
            header = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a header that cannot be read again shows as "not known"
            header = None
    out = []
    for name in show:
        keyword, label = IDENTIFIERS[name]
        value = None if header is None else header.get(keyword)
        out.append((label, str(value) if value not in (None, "") else "not known"))
    return out


def _fmt(v: Optional[float], digits: int = 1, unit: str = "") -> str:
    return "&ndash;" if v is None else f"{v:.{digits}f}{(' ' + unit) if unit else ''}"


def _numbers_table(m: Measurement) -> str:
    sz = m.sizing
    rows = [("Volume", [_fmt(getattr(m, f"{s}_ml"), 1, "mL") for s in SIDES], _fmt(m.volume_ml, 1, "mL")),
            ("% of hemithorax", [_fmt(getattr(m, f"{s}_pct_hemithorax"), 1, "%") for s in SIDES], ""),
            ("Aerated lung", [_fmt(getattr(m, f"{s}_lung_ml"), 0, "mL") for s in SIDES], "")]

    def where(kind, side):
        ln = None if sz is None else sz.line(kind, side)
        if ln is None:
            return ""
        if kind == "apex_cupola":
            return f" (slices {int(round(ln.end[0]))}&ndash;{int(round(ln.start[0]))})"
        return f" (slice {ln.slice})"

    for label, field, kind in (("Maximal rim depth", "rim_depth_mm", "rim_depth"),
                               ("Interpleural distance at the hilum", "hilum_distance_mm", "hilum_distance"),
                               ("Apex-to-cupola distance", "apex_cupola_mm", "apex_cupola")):
        rows.append((label, [_fmt(getattr(m, f"{s}_{field}"), 1, "mm") + where(kind, s) for s in SIDES], ""))
    pockets = []
    for s in SIDES:
        vols = [] if sz is None else sz.sides[s].pockets_ml
        n = getattr(m, f"{s}_pockets")
        pockets.append("&ndash;" if n is None else f"{n}" + (
            f" ({', '.join(f'{v:.1f}' for v in vols[:5])}{', ...' if len(vols) > 5 else ''} mL)" if vols else ""))
    rows.append(("Separate pockets", pockets, ""))
    body = "".join(f"<tr><th>{label}</th>" + "".join(f"<td class=num>{v}</td>" for v in vals)
                   + f"<td class=num>{tot}</td></tr>" for label, vals, tot in rows)
    return ("<table><tr><th></th><th>Right</th><th>Left</th><th>Both</th></tr>" + body + "</table>")


def _classes_table(m: Measurement) -> str:
    from .measure.measurement import CLASS_FIELDS

    body = ""
    for rule in RULES:
        cells = ""
        for s in SIDES:
            c = getattr(m, f"{s}_class_{CLASS_FIELDS[rule.name]}") or "not measured"
            cells += f"<td class='{c}'>{_esc(c)}</td>"
        body += (f"<tr><th>{_esc(rule.name)}</th><td>{_esc(rule.source)}</td>"
                 f"<td class=num>{rule.threshold:g} {_esc(rule.unit)}</td>{cells}</tr>")
    return ("<table><tr><th>Rule</th><th>What it measures</th><th>Large from</th><th>Right</th><th>Left</th></tr>"
            + body + f"</table><p class=note>{_esc(DISAGREE)}</p>")


def _truth_table(m: Measurement) -> str:
    if m.dice is None:
        return ""
    rows = [("Ground truth volume", _fmt(m.truth_volume_ml, 1, "mL")), ("Dice", _fmt(m.dice, 3)),
            ("IoU", _fmt(m.iou, 3)), ("Precision", _fmt(m.precision, 3)), ("Recall", _fmt(m.recall, 3)),
            ("Relative volume error", "&ndash;" if m.relative_volume_error is None
             else f"{100 * m.relative_volume_error:+.1f} %")]
    return ("<h2>Against the ground truth</h2><table>"
            + "".join(f"<tr><th>{a}</th><td class=num>{b}</td></tr>" for a, b in rows) + "</table>")


class _View:
    """The CT and masks in the patient frame (or as stored when that is not known), for pictures."""

    def __init__(self, ct, mask, truth):
        self.ct = ct
        try:
            self.frame = patient_frame(ct)
        except ValueError:
            self.frame = None
        view = (lambda a: a) if self.frame is None else self.frame.view
        self.hu, self.mask = view(ct.hu), view(mask)
        self.truth = None if truth is None else view(truth)
        self.spacing = ct.spacing if self.frame is None else self.frame.spacing

    def canon(self, point) -> np.ndarray:
        """Canonical index of a source index (the inverse of ``Frame.to_source``)."""
        p = np.asarray(point, float)
        if self.frame is None:
            return p
        out = np.empty(3)
        for c, a in enumerate(self.frame.perm):
            out[c] = (self.ct.shape[a] - 1 - p[a]) if self.frame.flip[c] else p[a]
        return out


def _axial(v: _View, k: int, lines, title: str) -> str:
    from matplotlib.figure import Figure

    sy, sx = v.spacing[1], v.spacing[2]
    fig = Figure(figsize=(4.7, 4.7 * v.hu.shape[1] * sy / (v.hu.shape[2] * sx) + 0.3))
    ax = fig.add_axes((0, 0, 1, 0.94))
    ax.imshow(v.hu[k], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sy / sx, interpolation="bilinear")
    _outline(ax, v.mask[k], _PTX)
    if v.truth is not None:
        _outline(ax, v.truth[k], _TRUTH)
    for ln in lines:
        a, b = v.canon(ln.start), v.canon(ln.end)
        if round(a[0]) != k:
            continue
        ax.plot([a[2], b[2]], [a[1], b[1]], color=_LINE, lw=2)
        ax.text(max(a[2], b[2]) + 4, (a[1] + b[1]) / 2, f"{ln.value_mm:.0f} mm", color=_LINE, fontsize=9,
                va="center", bbox={"facecolor": "black", "alpha": 0.5, "lw": 0, "pad": 1})
    ax.text(4, 4, "R", color="yellow", fontsize=11, va="top")
    ax.text(v.hu.shape[2] - 5, 4, "L", color="yellow", fontsize=11, va="top", ha="right")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=0.995)
    return _png(fig)


def _coronal(v: _View, j: int, lines, title: str) -> str:
    from matplotlib.figure import Figure

    sz, sx = v.spacing[0], v.spacing[2]
    img = v.hu[::-1, j, :]  # superior up
    nz = v.hu.shape[0]
    fig = Figure(figsize=(4.7, max(2.0, 4.7 * nz * sz / (v.hu.shape[2] * sx)) + 0.3))
    ax = fig.add_axes((0, 0, 1, 0.94))
    ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sz / sx, interpolation="bilinear")
    _outline(ax, v.mask[::-1, j, :], _PTX)
    if v.truth is not None:
        _outline(ax, v.truth[::-1, j, :], _TRUTH)
    for ln in lines:
        if ln.kind != "apex_cupola":
            continue
        a, b = v.canon(ln.start), v.canon(ln.end)
        ax.plot([a[2], b[2]], [nz - 1 - a[0], nz - 1 - b[0]], color=_LINE, lw=2)
    ax.text(4, 4, "R", color="yellow", fontsize=11, va="top", bbox={"facecolor": "black", "lw": 0, "pad": 1})
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=0.995)
    return _png(fig)


def _outline(ax, m: np.ndarray, colour: str) -> None:
    m = np.asarray(m) != 0
    if m.any() and not m.all():
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)


def _area_curve(m: Measurement, v: _View) -> str:
    from matplotlib.figure import Figure

    sz = m.sizing
    pos = np.asarray(sz.position_mm)
    # Height above the lowest slice: feet on the left, head on the right.
    pos = (pos.max() - pos) if v.frame is not None and v.frame.flip[0] else pos - pos.min()
    fig = Figure(figsize=(6.4, 2.6))
    ax = fig.add_axes((0.1, 0.2, 0.87, 0.7))
    for side, colour in (("right", "#1f77b4"), ("left", "#d62728")):
        ax.plot(pos, np.asarray(sz.area_mm2[side]) / 100.0, color=colour, label=side)
    ax.set_xlabel("height above the lowest slice (mm): feet on the left, head on the right"
                  if v.frame is not None else "slice position along the slice normal (mm)")
    ax.set_ylabel("area (cm$^2$)")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title("Pneumothorax area per slice", fontsize=10)
    return _png(fig)


def _key_images(v: _View, m: Measurement) -> list[tuple[str, str]]:
    """(data URL, caption) of the axial at the maximal depth, the axial at the hilum, and a coronal."""
    sz = m.sizing
    out = []
    rims = [ln for ln in (sz.lines if sz else []) if ln.kind == "rim_depth"]
    if rims:
        ln = max(rims, key=lambda x: x.value_mm)
        k = int(round(v.canon(ln.start)[0]))
        out.append((_axial(v, k, sz.lines, f"Axial, slice {ln.slice}: maximal rim depth ({ln.side})"),
                    f"Maximal rim depth on the {ln.side}: {ln.value_mm:.1f} mm (slice {ln.slice})."))
    hila = [ln for ln in (sz.lines if sz else []) if ln.kind == "hilum_distance"]
    if hila:
        ln = max(hila, key=lambda x: x.value_mm)
        k = int(round(v.canon(ln.start)[0]))
        out.append((_axial(v, k, sz.lines, f"Axial, slice {ln.slice}: level of the {ln.side} hilum"),
                    f"Interpleural distance at the {ln.side} hilum: {ln.value_mm:.1f} mm (slice {ln.slice})."))
    mask = np.asarray(v.mask) != 0
    if mask.any():
        j = int(np.argmax(mask.sum(axis=(0, 2))))
        out.append((_coronal(v, j, sz.lines if sz else [], "Coronal reformat, front view"),
                    "Coronal reformat through the row with the most pneumothorax; the apex-to-cupola line "
                    "where measured."))
    elif v.hu.shape[0] > 0:
        k = v.hu.shape[0] // 2
        out.append((_axial(v, k, [], "Axial, middle slice"), "No pneumothorax in the mask."))
    return out


def _method_html(method: Union[None, str, Mapping[str, Any]]) -> str:
    if method is None:
        return "<p>Not stated.</p>"
    if isinstance(method, str):
        return f"<p>{_esc(method)}</p>"
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _flat(method))
    return f"<table>{rows}</table>"


def _flat(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.extend(_flat(v, f"{prefix}{k}."))
        elif v not in (None, "", [], {}):
            out.append((f"{prefix}{k}", v))
    return out


def build_report(ct, mask: np.ndarray, *, truth: Optional[np.ndarray] = None,
                 measurement: Optional[Measurement] = None, show: Sequence[str] = (),
                 method: Union[None, str, Mapping[str, Any]] = None, title: str = "Pneumothorax report",
                 progress: Optional[Callable[[int, int, str], None]] = None, cancel=None) -> str:
    """The report as one HTML document (text); :func:`write_report` writes it.

    Parameters
    ----------
    ct : CTVolume
        The CT.
    mask : ndarray, shape (z, y, x)
        The pneumothorax mask on the CT's grid.
    truth : ndarray, optional
        A ground truth on the same grid: outlined, and the agreement is reported.
    measurement : Measurement, optional
        ``measure(mask, ct=ct, truth=truth)`` if already made (it is made here otherwise).
    show : sequence of str
        Identifiers to show, names of :data:`IDENTIFIERS` (none by default: the
        report carries no patient identifiers unless asked).
    method : str or mapping, optional
        What made the mask: free text, or a mapping (model file, its config and
        provenance), shown as a table.
    title : str
        The report's heading.
    progress, cancel
        ``progress(done, total, text)`` after each step; ``cancel`` (callable or
        Event) is checked between steps.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``show`` names an unknown identifier, or the mask or truth is not on the
        CT's grid (as :func:`~napari_pneumoseg.measure` refuses it).
    Cancelled
        If cancelled.
    """
    step = progress or (lambda done, total, text="": None)
    ids = _identifiers(ct, show)
    check_cancel(cancel)
    step(0, 3, "measuring")
    m = measurement if measurement is not None else measure(mask, ct=ct, truth=truth)
    if m.sizing is None:
        raise ValueError("the measurement has no guideline sizes: measure with the CT (sizing=True)")
    check_cancel(cancel)
    step(1, 3, "drawing")
    v = _View(ct, mask, truth)
    images = _key_images(v, m)
    curve = _area_curve(m, v)
    check_cancel(cancel)
    step(2, 3, "writing")
    meta = ct.metadata or {}
    series = [("Series", f"{meta.get('series_description') or '(no description)'} "
                         f"(number {meta.get('series_number') or '?'})"),
              ("Scanner", meta.get("manufacturer") or "not known"),
              ("Grid z, y, x", f"{' x '.join(str(s) for s in ct.shape)} voxels of "
                               f"{', '.join(f'{s:.3g}' for s in ct.spacing)} mm"),
              ("Slice thickness", _fmt(meta.get("slice_thickness") if meta.get("slice_thickness") == meta.get(
                  "slice_thickness") else None, 2, "mm"))]
    id_rows = "".join(f"<tr><th>{_esc(a)}</th><td>{_esc(b)}</td></tr>" for a, b in ids)
    id_html = (f"<table>{id_rows}</table>" if ids else
               "<p class=note>No patient identifiers shown (choose them with <code>--show</code>).</p>")
    warnings = list(ct.warnings) + list(m.notes)
    figs = "".join(f"<figure><img src='{src}' alt='{_esc(cap)}'><figcaption>{_esc(cap)}</figcaption></figure>"
                   for src, cap in images)
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    from . import __version__

    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_esc(title)}</h1>
<div class=sub>Made {now} by napari-pneumoseg {__version__}. Not a diagnosis: a measurement for a clinician
to check against the images.</div>
<h2>Patient and study</h2>{id_html}
<table>{''.join(f'<tr><th>{_esc(a)}</th><td>{_esc(b) if a != "Slice thickness" else b}</td></tr>'
                for a, b in series)}</table>
<h2>Size</h2>{_numbers_table(m)}
<p class=note>% of hemithorax = pneumothorax / (pneumothorax + aerated lung) of that side (Collins et al. 1995,
on CT); aerated lung is the lung-density air of that side found from HU. Distances are defined in
<code>napari_pneumoseg.measure.sizing</code>: rim depth is the widest pleura-to-pleura distance on an axial
slice through the lung; the hilum distance is the left-right gap between lung and chest wall on the slice of
the hilum (what a PA film shows); apex-to-cupola runs head-feet from the lung's top to the pleural cavity's.</p>
<h2>Size class by each rule</h2>{_classes_table(m)}
{_truth_table(m)}
<h2>Key images</h2><div class=images>{figs}</div>
<figure><img src='{curve}' alt='area per slice'><figcaption>Pneumothorax area per slice, each side.</figcaption>
</figure>
<h2>Method</h2>{_method_html(method)}
<h2>Warnings</h2>{'<ul class=warn>' + ''.join(f'<li>{_esc(w)}</li>' for w in warnings) + '</ul>'
                  if warnings else '<p>None.</p>'}
</body></html>
"""
    step(3, 3, "done")
    return doc


def write_report(path, ct, mask: np.ndarray, *, overwrite: bool = False, **options):
    """Write :func:`build_report`'s HTML to ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.html`` file; its folder must exist.
    ct, mask
        As for :func:`build_report`.
    overwrite : bool, default False
        Replace an existing file.
    **options
        ``truth``, ``measurement``, ``show``, ``method``, ``title``, ``progress``,
        ``cancel``: as for :func:`build_report`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked before any work).
    FileNotFoundError
        If the folder of ``path`` does not exist.
    ValueError, Cancelled
        As :func:`build_report`; nothing is written then.
    """
    from pathlib import Path

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or allow replacing it (--force)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} does not exist")
    doc = build_report(ct, mask, **options)
    return write_text_atomic(path, doc, overwrite=overwrite)

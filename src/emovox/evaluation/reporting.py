"""Tables, plots and JSON for results, in the layout the papers use.

Markdown tables follow the IEMOCAP ensemble paper's Table 2 (one row per model, ``WA (%)`` and
``UA (%)`` as percentages with two decimals, here as ``mean ± std`` over folds) so a run can be
put next to the published numbers. CSV and JSON keep fractions at full precision for machines.
A result whose protocol is not speaker-independent carries ``NOT speaker-independent`` in every
human-readable output, because such numbers are not comparable with speaker-independent ones.

Metric definitions live in ``emovox.evaluation.metrics``; this module only formats them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from emovox.atomic import atomic_write_text
from emovox.evaluation.metrics import HEADLINE, CVResult, Metrics

NOT_SPEAKER_INDEPENDENT = "NOT speaker-independent"

#: Column titles of the headline metrics, as in the papers' tables.
METRIC_TITLES = {"wa": "WA (%)", "ua": "UA (%)", "macro_f1": "Macro-F1 (%)", "weighted_f1": "Weighted-F1 (%)"}


# --- formatting ---------------------------------------------------------------------------


def fmt_pct(value: float, std: float | None = None, digits: int = 2) -> str:
    """``0.69614`` -> ``69.61``; with ``std`` -> ``69.61 ± 1.23`` (percentage points)."""
    text = f"{value * 100:.{digits}f}"
    return text if std is None else f"{text} ± {std * 100:.{digits}f}"


def protocol_note(result: CVResult) -> str | None:
    """The warning line for a result that is not speaker-independent, else None."""
    if result.speaker_independent is False:
        protocol = f" (protocol `{result.protocol}`)" if result.protocol else ""
        return (
            f"**{NOT_SPEAKER_INDEPENDENT}**{protocol}: test speakers may also be heard in training, so these "
            "scores are not comparable with speaker-independent results."
        )
    return None


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


#: Public name for other modules' report sections (votes, confidence intervals).
markdown_table = _md_table


# --- markdown -------------------------------------------------------------------------------


def folds_markdown(result: CVResult) -> str:
    """One row per fold, then ``mean ± std`` and ``pooled`` rows."""
    header = ["Fold", "Name", "N", *(METRIC_TITLES[m] for m in HEADLINE)]
    rows: list[list[Any]] = []
    for i, (name, m) in enumerate(zip(result.fold_names, result.folds, strict=True), start=1):
        rows.append([i, name, m.n, *(fmt_pct(getattr(m, k)) for k in HEADLINE)])
    rows.append(["mean ± std", "", "", *(fmt_pct(getattr(result.mean, k), getattr(result.std, k)) for k in HEADLINE)])
    rows.append(["pooled", "all folds", result.pooled.n, *(fmt_pct(getattr(result.pooled, k)) for k in HEADLINE)])
    return _md_table(header, rows)


def per_class_markdown(metrics: Metrics) -> str:
    header = ["Class", "Precision (%)", "Recall (%)", "F1 (%)", "Support"]
    rows = [
        [label, fmt_pct(s.precision), fmt_pct(s.recall), fmt_pct(s.f1), s.support]
        for label, s in metrics.per_class.items()
    ]
    return _md_table(header, rows)


def confusion_markdown(metrics: Metrics, normalized: bool = False) -> str:
    """Rows = true class, columns = predicted class; counts or row percentages."""
    matrix = metrics.confusion_normalized if normalized else metrics.confusion
    rows = [
        [label, *((fmt_pct(v, digits=1) if normalized else v) for v in row)]
        for label, row in zip(metrics.labels, matrix, strict=True)
    ]
    return _md_table(["true \\ predicted", *metrics.labels], rows)


def report_markdown(result: CVResult, title: str = "Results") -> str:
    """A full report: protocol flag, per-fold table, per-class and confusion tables (pooled)."""
    parts = [f"# {title}\n"]
    note = protocol_note(result)
    if note:
        parts.append(f"> ⚠ {note}\n")
    parts.append(
        f"Protocol: `{result.protocol or 'unknown'}`, {len(result.folds)} fold(s), {result.pooled.n} test utterances. "
        "WA = accuracy, UA = mean per-class recall, Macro-F1 and Weighted-F1 (support-weighted) as scikit-learn; "
        "mean ± std is over folds "
        "(population std), pooled is over all folds' predictions together.\n"
    )
    parts.append("## Folds\n\n" + folds_markdown(result))
    parts.append("## Per class (pooled)\n\n" + per_class_markdown(result.pooled))
    parts.append("## Confusion matrix (pooled, counts)\n\n" + confusion_markdown(result.pooled))
    parts.append("## Confusion matrix (pooled, % of true class)\n\n" + confusion_markdown(result.pooled, normalized=True))
    return "\n".join(parts)


def ci_markdown(block: Mapping[str, Any]) -> str:
    """The report section for a ``confidence_intervals`` block (``emovox.evaluation.stats.add_confidence_intervals``)."""
    units = [u for u in ("utterance", "speaker") if u in block]
    level = f"{100 * block['level']:g} %"
    header = ["Metric", "pooled (%)", *(f"{level} CI, {u}s (n={block[u]['n_units']})" for u in units)]
    rows = [
        [METRIC_TITLES[k].replace(" (%)", ""), fmt_pct(block[units[0]][k]["value"]),
         *(f"[{fmt_pct(block[u][k]['low'])}, {fmt_pct(block[u][k]['high'])}]" for u in units)]
        for k in HEADLINE
    ]  # fmt: skip
    return (
        "## Confidence intervals\n\n"
        + _md_table(header, rows)
        + f"\nPercentile bootstrap of the pooled test predictions, {block['n_boot']} resamples, seed {block['seed']}"
        + (" (speakers: each drawn with all its utterances)" if "speaker" in units else "")
        + ".\n"
    )


# --- CSV ------------------------------------------------------------------------------------


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[repr(x) if isinstance(x, float) else x for x in row] for row in rows])
    return buf.getvalue()


#: Public name for other modules' CSV files (per-corpus figures, the corpus matrix).
csv_text = _csv


def folds_csv(result: CVResult) -> str:
    """One row per fold plus ``mean``, ``std`` and ``pooled`` rows; fractions at full precision."""
    rows: list[list[Any]] = [
        [str(i), name, m.n, *(getattr(m, k) for k in HEADLINE)]
        for i, (name, m) in enumerate(zip(result.fold_names, result.folds, strict=True), start=1)
    ]
    rows.append(["mean", "", "", *(getattr(result.mean, k) for k in HEADLINE)])
    rows.append(["std", "", "", *(getattr(result.std, k) for k in HEADLINE)])
    rows.append(["pooled", "all folds", result.pooled.n, *(getattr(result.pooled, k) for k in HEADLINE)])
    return _csv(["fold", "name", "n", *HEADLINE], rows)


def per_class_csv(metrics: Metrics) -> str:
    rows = [[label, s.precision, s.recall, s.f1, s.support] for label, s in metrics.per_class.items()]
    return _csv(["label", "precision", "recall", "f1", "support"], rows)


# --- files ----------------------------------------------------------------------------------


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (see ``emovox.atomic``); returns the path."""
    atomic_write_text(Path(path), text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (or ``obj.to_dict()``) as indented JSON, atomically."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _save_figure(fig: Any, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_confusion(metrics: Metrics, path: str | Path, title: str = "Confusion matrix") -> Path:
    """Two panels, counts and row-normalised (% of true class), rows = true, columns = predicted.

    Drawn on a bare ``Figure`` with the Agg canvas: no pyplot global state, safe in servers
    and threads.
    """
    import numpy as np
    from matplotlib.figure import Figure

    labels = list(metrics.labels)
    counts = np.asarray(metrics.confusion)
    normed = np.asarray(metrics.confusion_normalized)
    side = max(4.0, 0.7 * len(labels) + 1.5)
    fig = Figure(figsize=(2 * side + 1.5, side), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = [
        (axes[0], counts, "counts", [f"{v:d}" for v in counts.ravel()], counts.max() or 1),
        (axes[1], normed, "% of true class", [f"{100 * v:.0f}" for v in normed.ravel()], 1.0),
    ]
    for ax, values, subtitle, texts, vmax in panels:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(subtitle)
        for k, text in enumerate(texts):
            i, j = divmod(k, len(labels))
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > 0.6 * vmax else "black")
    fig.suptitle(title)
    return _save_figure(fig, path)


def plot_corpus_matrix(cells: Sequence[Mapping[str, Any]], path: str | Path, title: str = "Train -> test UA") -> Path:
    """Heatmap of UA per (training corpora -> test corpus) cell: rows what the model learned from,
    columns the corpus it was tested on; each cell shows UA (%) and, below, the chance level and how
    many classes both sides share. Pairs no fold measured are left blank."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = list(dict.fromkeys(str(c["train"]) for c in cells))
    cols = list(dict.fromkeys(str(c["test"]) for c in cells))
    ua = np.full((len(rows), len(cols)), np.nan)
    notes: dict[tuple[int, int], str] = {}
    for c in cells:
        i, j = rows.index(str(c["train"])), cols.index(str(c["test"]))
        ua[i, j] = 100 * float(c["ua"])
        notes[i, j] = f"{ua[i, j]:.1f}\nchance {100 * float(c['chance_ua']):.0f}, {c['shared_labels']} shared"
    fig = Figure(figsize=(1.9 * len(cols) + 2.8, 0.9 * len(rows) + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(ua), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="UA (%)")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    for (i, j), text in notes.items():
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if ua[i, j] < 60 else "black")
    ax.set_title(title)
    return _save_figure(fig, path)


def plot_learning_curves(
    history: Sequence[Sequence[Mapping[str, Any]]],
    path: str | Path,
    title: str = "Learning curves",
    fold_names: Sequence[str] | None = None,
) -> Path:
    """One small panel per fold (small multiples), so that 10-20 folds stay readable; see ``learning_curves_figure``."""
    return _save_figure(learning_curves_figure(history, title, fold_names), path)


def learning_curves_figure(
    history: Sequence[Sequence[Mapping[str, Any]]], title: str = "Learning curves", fold_names: Sequence[str] | None = None
):
    """Per fold: train loss (solid) and validation loss (dashed) on the left axis, validation UA on the
    right axis, the chosen epoch as a dotted line; one legend for all panels, below them.

    ``history[f]`` is fold f's list of ``{"epoch", "train_loss", "valid_loss", "valid_ua"}`` (missing or
    None values are skipped); ``fold_names[f]`` titles its panel and should say what the curve is
    measured on, e.g. ``test 03 / valid 08``: the validation curve is the *validation* speaker's, not
    the test speaker's. One panel per fold instead of one colour per fold: ten colours repeat after ten
    folds, and a legend of twenty entries covers the curves it explains.
    """
    import math

    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not history or not any(history):
        raise ValueError("plot_learning_curves needs at least one epoch of history")
    n = len(history)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.1 * cols + 0.8, 2.3 * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    loss_color, ua_color = "C0", "C3"
    for f in range(rows * cols):
        ax = axes[f // cols][f % cols]
        if f >= n:
            ax.set_visible(False)
            continue
        epochs = history[f]

        for key, style in (("train_loss", "-"), ("valid_loss", "--")):
            xs, ys = _series(epochs, key)
            if xs:
                ax.plot(xs, ys, style, color=loss_color, marker="o", markersize=2, linewidth=1)
        xs, ys = _series(epochs, "valid_ua")
        if xs:
            ua = ax.twinx()
            ua.plot(xs, [100 * y for y in ys], "-", color=ua_color, marker="o", markersize=2, linewidth=1)
            ua.set_ylim(0, 100)
            ua.tick_params(axis="y", labelsize=7, colors=ua_color)
            if f % cols == cols - 1 or f == n - 1:
                ua.set_ylabel("valid UA (%)", fontsize=8, color=ua_color)
            best = xs[int(max(range(len(ys)), key=lambda i: ys[i]))]
            ax.axvline(best, color="0.4", linestyle=":", linewidth=1)
        ax.set_title(fold_names[f] if fold_names else f"fold {f + 1}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if f % cols == 0:
            ax.set_ylabel("loss", fontsize=8)
        if f // cols == rows - 1 or f + cols >= n:
            ax.set_xlabel("epoch", fontsize=8)
    handles = [
        Line2D([], [], color=loss_color, linestyle="-", label="train loss"),
        Line2D([], [], color=loss_color, linestyle="--", label="valid loss"),
        Line2D([], [], color=ua_color, linestyle="-", label="valid UA (%)"),
        Line2D([], [], color="0.4", linestyle=":", label="chosen epoch (best valid UA)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


def _series(epochs: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one logged quantity; epochs where it is missing, None or NaN are left out."""
    pts = [
        (e["epoch"], e[key]) for e in epochs if e.get(key) is not None and not (isinstance(e[key], float) and e[key] != e[key])
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def write_report(
    result: CVResult,
    out_dir: str | Path,
    title: str = "Results",
    history: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    curve_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write every artefact of one run: report.md, folds.csv, per_class.csv, results.json, PNGs.

    ``curve_names`` title the learning-curve panels (default: the fold names); see ``learning_curves_figure``."""
    out = Path(out_dir)
    paths = {
        "markdown": write_text(out / "report.md", report_markdown(result, title)),
        "folds_csv": write_text(out / "folds.csv", folds_csv(result)),
        "per_class_csv": write_text(out / "per_class.csv", per_class_csv(result.pooled)),
        "json": write_json(out / "results.json", result),
        "confusion_png": plot_confusion(result.pooled, out / "confusion.png", f"{title}: pooled confusion matrix"),
    }
    if history and any(history):
        paths["curves_png"] = plot_learning_curves(history, out / "learning_curves.png", title, curve_names or result.fold_names)
    return paths


# --- terminal -------------------------------------------------------------------------------


def print_summary(
    result: CVResult,
    labels: Sequence[str] | None = None,
    console: Console | None = None,
    title: str = "Results",
) -> None:
    """Folds, mean ± std and pooled scores, then the pooled confusion matrix, as rich tables."""
    console = console or Console()
    labels = list(labels) if labels is not None else list(result.labels)
    if labels != list(result.labels):
        raise ValueError(f"labels {labels} differ from the result's label set {list(result.labels)}")
    caption = f"protocol {escape(result.protocol)}" if result.protocol else None
    table = Table(title=escape(title), caption=caption)
    table.add_column("Fold", justify="right")
    table.add_column("Name")
    table.add_column("N", justify="right")
    for k in HEADLINE:
        table.add_column(METRIC_TITLES[k], justify="right")
    for i, (name, m) in enumerate(zip(result.fold_names, result.folds, strict=True), start=1):
        cells = (fmt_pct(getattr(m, k)) for k in HEADLINE)
        table.add_row(str(i), escape(name), str(m.n), *cells, end_section=i == len(result.folds))
    table.add_row(
        "mean ± std", "", "", *(fmt_pct(getattr(result.mean, k), getattr(result.std, k)) for k in HEADLINE), style="bold"
    )
    table.add_row("pooled", "all folds", str(result.pooled.n), *(fmt_pct(getattr(result.pooled, k)) for k in HEADLINE))
    if result.speaker_independent is False:
        console.print(
            f"[bold red]⚠ {NOT_SPEAKER_INDEPENDENT}[/] (protocol {escape(result.protocol)}): "
            "test speakers may also be heard in training"
        )
    console.print(table)

    console.print(confusion_table(result.pooled, "Confusion matrix (pooled)", console.width))


def confusion_table(metrics: Metrics, title: str, width: int = 80) -> Table:
    """Rows = true class, columns = predicted; ``count (row %)`` when that fits in ``width``, else counts,
    with column titles shortened to fit."""
    labels = list(metrics.labels)
    row_head = max(len("true \\ pred"), *(len(label) for label in labels))
    with_pct = row_head + 3 + len(labels) * (max(9, max(len(label) for label in labels)) + 3) <= width
    cell = max(4, len(str(max((max(r) for r in metrics.confusion), default=0))))
    column = max(1, (width - row_head - 3) // max(len(labels), 1) - 3)
    table = Table(title=f"{title}: count (% of true class)" if with_pct else f"{title}: counts", show_edge=False)
    table.add_column("true \\ pred", style="bold", no_wrap=True)
    for label in labels:
        name = label if with_pct else label[: max(column, cell)]
        table.add_column(escape(name), justify="right", no_wrap=True)
    for label, counts, normed in zip(labels, metrics.confusion, metrics.confusion_normalized, strict=True):
        cells = [f"{c} ({100 * v:.0f}%)" if with_pct else str(c) for c, v in zip(counts, normed, strict=True)]
        table.add_row(escape(label), *cells)
    return table


def print_evaluation(metrics: Metrics, console: Console | None = None, title: str = "Evaluation") -> None:
    """One recognizer on one corpus: the headline scores, per-class scores and the confusion matrix.

    Not the cross-validation table: there are no folds here, so no "Fold 1" and no mean ± std.
    """
    console = console or Console()
    head = Table(title=escape(title), show_edge=False)
    head.add_column("utterances", justify="right")
    for k in HEADLINE:
        head.add_column(METRIC_TITLES[k], justify="right")
    head.add_row(str(metrics.n), *(fmt_pct(getattr(metrics, k)) for k in HEADLINE))
    console.print(head)
    per = Table(title="Per class", show_edge=False)
    for col in ("class", "precision (%)", "recall (%)", "F1 (%)", "support"):
        per.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
    for label, sc in metrics.per_class.items():
        per.add_row(escape(label), fmt_pct(sc.precision), fmt_pct(sc.recall), fmt_pct(sc.f1), str(sc.support))
    console.print(per)
    console.print(confusion_table(metrics, "Confusion matrix", console.width))

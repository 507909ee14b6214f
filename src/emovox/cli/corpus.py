"""``emovox corpus info|export``: look at a corpus before training on it, and write it as a manifest.

``info`` is the first thing to run on a new copy of a corpus: it reads every header, so a
missing or broken file shows up here instead of in the middle of a run. ``export`` writes the
utterance table that every other tool can read (and that ``manifest:`` reads back unchanged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from emovox.audio import audio_duration
from emovox.cli import Typer, app
from emovox.corpora import Corpus, load_corpus, write_manifest
from emovox.errors import AudioError

corpus_app = Typer(name="corpus", help="Inspect corpora and export them as manifests.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

SPEC_HELP = "Corpus spec FORMAT:PATH[?options], e.g. iemocap:/data/IEMOCAP?labels=6 or manifest:train.csv"


def corpus_summary(corpus: Corpus) -> dict[str, Any]:
    """Counts and durations of a corpus; durations come from file headers (no decoding).

    Text-only corpora (MELD) have no audio: their utterances are counted under ``without_audio``
    and have no duration, rather than being reported as unreadable files.
    """
    durations: list[float] = []
    unreadable: list[str] = []
    without_audio = 0
    file_durations: dict[Path, float] = {}
    for u in corpus.utterances:
        if u.audio is None:
            without_audio += 1
            continue
        if u.cut and u.start is not None and u.end is not None:
            durations.append(u.end - u.start)
            continue
        try:
            if u.audio not in file_durations:
                file_durations[u.audio] = audio_duration(u.audio)  # type: ignore[arg-type]
            total = file_durations[u.audio]
        except AudioError as exc:
            unreadable.append(str(exc))
            continue
        durations.append(total - (u.start or 0.0) if u.cut else total)
    total_s = float(sum(durations))
    speakers: dict[str, int] = {}
    for u in corpus.utterances:
        speakers[u.speaker] = speakers.get(u.speaker, 0) + 1
    return {
        "name": corpus.name,
        "spec": corpus.spec,
        "utterances": len(corpus),
        "labels": corpus.label_counts(),
        "speakers": len(speakers),
        "utterances_per_speaker": dict(sorted(speakers.items())),
        "sessions": len(corpus.sessions),
        "dialogues": len({u.dialogue for u in corpus.utterances if u.dialogue is not None}),
        "total_duration_s": round(total_s, 3),
        "mean_duration_s": round(total_s / len(durations), 3) if durations else None,
        "missing_transcripts": sum(1 for u in corpus.utterances if u.text is None),
        "without_audio": without_audio,
        "unreadable_audio": unreadable,
    }


@corpus_app.command("info")
def info(
    specs: list[str] = typer.Argument(
        ..., metavar="SPEC...", help=SPEC_HELP + ". Several: each corpus, and which labels each has."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Utterances, labels, speakers, sessions, durations and missing transcripts of a corpus (or of several,
    with the table of which labels each corpus has and the ones they share)."""
    if len(specs) == 1:
        summary = corpus_summary(load_corpus(specs[0]))
        if as_json:
            typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        else:
            _print_table(summary)
        if summary["unreadable_audio"]:
            raise typer.Exit(code=1)
        return
    from emovox.corpora import label_table, shared_labels

    corpora = [load_corpus(s) for s in specs]
    names = [c.name for c in corpora]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        from emovox.errors import CorpusError

        raise CorpusError(f"two corpora are named {', '.join(twice)}; give one another name with ?name=NAME in its spec")
    summaries = [corpus_summary(c) for c in corpora]
    table = label_table(corpora)
    shared = list(shared_labels(corpora))
    if as_json:
        typer.echo(json.dumps({"corpora": summaries, "labels": table, "shared": shared}, indent=2, ensure_ascii=False))
    else:
        _print_corpora(summaries, table, shared)
    if any(x["unreadable_audio"] for x in summaries):
        raise typer.Exit(code=1)


@corpus_app.command("matrix")
def matrix(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="cv run directories over the same corpora and labels."),
    out: Path = typer.Option(None, "--out", metavar="DIR", help="Write corpus_matrix.csv and corpus_matrix.png here."),
) -> None:
    """One train -> test matrix from the cells of several runs over the same corpora and label set.

    Each run over several corpora records a cell per (training corpora, test corpus) pair of its folds:
    one cross-corpus:A run per corpus A gives row A, an in-corpus:K run the diagonal.
    """
    from emovox.errors import EmovoxError
    from emovox.evaluation.reporting import csv_text, plot_corpus_matrix
    from emovox.training.breakdown import MATRIX_COLUMNS, matrix_csv_rows

    cells: dict[tuple[str, str], dict] = {}
    labels = where = None
    for run in runs:
        path = run / "results.json" if run.is_dir() else run
        if not path.is_file():
            raise EmovoxError(f"{run}: no results.json; give cv run directories (emovox cv ... --out DIR)")
        result = json.loads(path.read_text(encoding="utf-8"))
        if not result.get("corpus_matrix"):
            raise EmovoxError(f"{run}: a run over one corpus has no train -> test cells; run it over several (corpus: a list)")
        if labels is None:
            labels, where = result["label_set"], run
        elif result["label_set"] != labels:
            raise EmovoxError(
                f"{run} is scored over labels {result['label_set']}, {where} over {labels}: cells over different label "
                "sets are not comparable; run both over one labels: policy"
            )
        for cell in result["corpus_matrix"]:
            key = (cell["train"], cell["test"])
            if key in cells:
                raise EmovoxError(f"{run} and {cells[key]['run']} both measure {key[0]} -> {key[1]}; give one of them")
            cells[key] = {**cell, "run": str(run)}
    ordered = list(cells.values())
    console = Console()
    grid = Table(title="train -> test UA (%)  (chance, shared classes)")
    tests = list(dict.fromkeys(c["test"] for c in ordered))
    grid.add_column("trained on \\ tested on", style="bold")
    for t in tests:
        grid.add_column(t, justify="right")
    for train in dict.fromkeys(c["train"] for c in ordered):
        row = []
        for t in tests:
            c = cells.get((train, t))
            row.append(f"{100 * c['ua']:.1f} ({100 * c['chance_ua']:.0f}, {c['shared_labels']})" if c else "")
        grid.add_row(train, *row)
    console.print(grid)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "corpus_matrix.csv").write_text(csv_text([*MATRIX_COLUMNS, "run"], [
            [*r, c["run"]] for r, c in zip(matrix_csv_rows(ordered), ordered, strict=True)]), encoding="utf-8")  # fmt: skip
        plot_corpus_matrix(ordered, out / "corpus_matrix.png", "UA, trained on -> tested on")
        typer.echo(f"wrote {out / 'corpus_matrix.csv'} and {out / 'corpus_matrix.png'} ({len(ordered)} cells)")


@corpus_app.command("export")
def export(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    out: Path = typer.Argument(..., help="Manifest to write: *.csv, *.tsv or *.jsonl."),
    relative: bool = typer.Option(False, "--relative", help="Write audio paths relative to the manifest's folder."),
) -> None:
    """Write a corpus as a manifest that ``manifest:OUT`` reads back as the same utterances."""
    corpus = load_corpus(spec)
    path = write_manifest(corpus, out, relative=relative)
    typer.echo(f"wrote {len(corpus)} utterances to {path}")
    if list(corpus.labels) != sorted(corpus.labels):
        typer.echo(f"label order: read it back as manifest:{path}?labels={','.join(corpus.labels)}")


def _print_table(summary: dict[str, Any]) -> None:
    console = Console()
    overview = Table(title=f"{summary['name']}  ({summary['spec']})", show_header=False)
    overview.add_column("what", style="bold")
    overview.add_column("value", justify="right")
    mean = summary["mean_duration_s"]
    for what, value in (
        ("utterances", summary["utterances"]),
        ("speakers", summary["speakers"]),
        ("sessions", summary["sessions"]),
        ("dialogues", summary["dialogues"]),
        ("total duration", f"{summary['total_duration_s'] / 3600:.2f} h" if mean is not None else "-"),
        ("mean duration", f"{mean:.2f} s" if mean is not None else "-"),
        ("missing transcripts", summary["missing_transcripts"]),
        ("without audio (text only)", summary["without_audio"]),
        ("unreadable audio", len(summary["unreadable_audio"])),
    ):
        overview.add_row(what, str(value))
    console.print(overview)
    labels = Table(title="labels")
    labels.add_column("label")
    labels.add_column("utterances", justify="right")
    labels.add_column("share", justify="right")
    n = max(summary["utterances"], 1)
    for label, count in summary["labels"].items():
        labels.add_row(label, str(count), f"{100 * count / n:.1f}%")
    console.print(labels)
    for problem in summary["unreadable_audio"][:10]:
        console.print(f"[red]unreadable:[/red] {problem}", highlight=False)


def _print_corpora(summaries: list[dict[str, Any]], table: dict[str, dict[str, int]], shared: list[str]) -> None:
    console = Console()
    overview = Table(title=f"{len(summaries)} corpora")
    for col in ("corpus", "spec", "utterances", "speakers", "hours", "mean s", "unreadable"):
        overview.add_column(col, justify="left" if col in ("corpus", "spec") else "right")
    for x in summaries:
        mean = x["mean_duration_s"]
        overview.add_row(
            x["name"], x["spec"], str(x["utterances"]), str(x["speakers"]),
            f"{x['total_duration_s'] / 3600:.2f}" if mean is not None else "-", f"{mean:.2f}" if mean is not None else "-",
            str(len(x["unreadable_audio"])),
        )  # fmt: skip
    console.print(overview)
    labels = Table(title="utterances per label (canonical names)")
    labels.add_column("label")
    for x in summaries:
        labels.add_column(x["name"], justify="right")
    labels.add_column("in every corpus")
    for label, counts in table.items():
        labels.add_row(label, *(str(counts[x["name"]]) if counts[x["name"]] else "-" for x in summaries),
                       "yes" if label in shared else "")  # fmt: skip
    console.print(labels)
    console.print(
        f"shared by every corpus: {', '.join(shared) or 'none'} (the label set of a run over these corpora unless "
        "its labels: section says otherwise)",
        highlight=False,
    )
    for x in summaries:
        for problem in x["unreadable_audio"][:5]:
            console.print(f"[red]unreadable ({x['name']}):[/red] {problem}", highlight=False)

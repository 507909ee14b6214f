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
from emovox.cli import app
from emovox.corpora import Corpus, load_corpus, write_manifest
from emovox.errors import AudioError

corpus_app = typer.Typer(name="corpus", help="Inspect corpora and export them as manifests.", no_args_is_help=True)
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
    spec: str = typer.Argument(..., help=SPEC_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Utterances, labels, speakers, sessions, durations and missing transcripts of a corpus."""
    summary = corpus_summary(load_corpus(spec))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        _print_table(summary)
    if summary["unreadable_audio"]:
        raise typer.Exit(code=1)


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

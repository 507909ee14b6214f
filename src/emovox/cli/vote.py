"""``emovox vote``: combine the saved predictions of several runs by voting (``emovox.evaluation.voting``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from emovox.cli import app


@app.command("vote")
def vote_command(
    runs: list[Path] = typer.Argument(..., help="Run directories of the same corpus and protocol (emovox cv or vote)."),
    soft: bool = typer.Option(False, "--soft", help="Average probabilities instead of counting votes."),
    weighted: bool = typer.Option(False, "--weighted", help="Weighted soft vote; weights chosen per fold (see --choose-on)."),
    k: int | None = typer.Option(
        None, "--k", min=1, help="Vote K of the runs: every K-subset is a candidate, one chosen per fold."
    ),
    choose_on: str = typer.Option(
        "valid",
        "--choose-on",
        help="valid: choose subsets/weights on each fold's validation predictions; test: the paper's way (OPTIMISTIC).",
    ),
    metric: str = typer.Option(
        "ua", "--metric",
        help="What the choice optimises: wa, ua, macro_f1, weighted_f1, or log_loss (minimised; tells candidates apart "
        "where a small validation part scores them all 100 %).",
    ),
    grid: int = typer.Option(10, "--grid", min=1, help="Weight grid steps for --weighted (weights in multiples of 1/GRID)."),
    out: Path | None = typer.Option(None, "--out", help="Write the vote as a run directory here."),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples of the confidence intervals."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Hard, soft or weighted vote of several runs, fold by fold; the output is itself a run directory."""
    from rich.console import Console

    from emovox.evaluation.reporting import NOT_SPEAKER_INDEPENDENT, ci_markdown, print_summary
    from emovox.evaluation.stats import add_confidence_intervals
    from emovox.evaluation.vote_report import describe, vote_markdown
    from emovox.evaluation.voting import OPTIMISTIC, vote_runs

    method = "weighted" if weighted else "soft" if soft else "hard"
    vote = vote_runs(runs, method=method, k=k, choose_on=choose_on, metric=metric, grid=grid, progress=not quiet and not as_json)
    if out is not None:
        from emovox.evaluation.vote_report import write_vote

        payload = write_vote(vote, out, n_boot=n_boot)
    else:
        import numpy as np

        payload = {**vote.result.to_dict(), "label_set": list(vote.labels), "vote": describe(vote)}
        true = np.concatenate([f.test.true for f in vote.folds])
        pred = np.concatenate([f.test.pred for f in vote.folds])
        add_confidence_intervals(payload, true, pred, n_boot=n_boot)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console(highlight=False)
    print_summary(vote.result, console=console, title=f"{method} vote of {len(vote.runs)} runs")
    console.print(vote_markdown(vote))
    console.print(ci_markdown(payload["confidence_intervals"]))
    if vote.optimistic:
        console.print(f"[bold red]⚠ {OPTIMISTIC}[/]")
    if vote.result.speaker_independent is False:
        console.print(f"[bold red]{NOT_SPEAKER_INDEPENDENT}[/] (protocol {vote.result.protocol})")
    if out is not None:
        console.print(f"wrote the vote as a run directory to {out}/ (predictions.csv, results.json, report.md, candidates.csv)")

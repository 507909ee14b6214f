"""``emovox compare`` and ``emovox ci``: is a difference real, and how sure is a figure?

Both read finished run directories (``emovox cv`` or ``emovox vote``) and resample their pooled
test predictions (``emovox.evaluation.stats``); neither retrains anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from emovox.cli import app

METRIC_HELP = "Metric: wa, ua, macro_f1 or weighted_f1."
BY_HELP = (
    "utterance: resample test utterances; speaker: resample test speakers with all their utterances "
    "(needs the run's splits/; the honest unit for speaker-independent protocols)."
)


@app.command("compare")
def compare_command(
    run_a: Path = typer.Argument(..., help="Run directory A."),
    run_b: Path = typer.Argument(..., help="Run directory B (tested on the same utterances as A)."),
    metric: str = typer.Option("ua", "--metric", help=METRIC_HELP),
    by: str = typer.Option("utterance", "--by", help=BY_HELP),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Paired bootstrap of A - B over the same test utterances: the difference, its interval and a verdict."""
    from rich.console import Console

    from emovox.evaluation.reporting import METRIC_TITLES
    from emovox.evaluation.stats import compare_runs

    c = compare_runs(run_a, run_b, metric=metric, by=by, n_boot=n_boot, level=level, seed=seed)
    if as_json:
        typer.echo(json.dumps(c, indent=2))
        return
    name = METRIC_TITLES[metric].replace(" (%)", "")
    pct = f"{100 * c['level']:g} %"
    console = Console(highlight=False)
    for side in ("a", "b"):
        iv = c[side]
        console.print(
            f"{side.upper()}: {c['run_' + side]}  {name} {100 * iv['value']:.2f}  "
            f"({pct} CI {100 * iv['low']:.2f} to {100 * iv['high']:.2f})"
        )
    d = c["difference"]
    console.print(
        f"A - B: {100 * d['value']:+.2f} points, {pct} CI {100 * d['low']:+.2f} to {100 * d['high']:+.2f}, "
        f"bootstrap p = {c['p_value']:.3f}  (paired, {c['n_boot']} resamples of {c['n_units']} {c['unit']}s, "
        f"{c['n_utterances']} utterances, seed {c['seed']})"
    )
    colour = "yellow" if c["verdict"].startswith("no difference") else "bold green"
    console.print(f"verdict: [{colour}]{c['verdict']}[/]")


@app.command("ci")
def ci_command(
    run: Path = typer.Argument(..., help="Run directory."),
    by: str = typer.Option("utterance", "--by", help=BY_HELP + " speaker reports both."),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples."),
    level: float = typer.Option(0.95, "--level", help="Confidence level."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling."),
    as_json: bool = typer.Option(False, "--json", help="Print the intervals as JSON."),
) -> None:
    """Bootstrap confidence intervals of a run's pooled WA, UA, macro-F1 and weighted-F1."""
    from emovox.evaluation.reporting import ci_markdown
    from emovox.evaluation.stats import run_intervals

    block = run_intervals(run, by=by, n_boot=n_boot, level=level, seed=seed)
    typer.echo(json.dumps(block, indent=2) if as_json else ci_markdown(block))

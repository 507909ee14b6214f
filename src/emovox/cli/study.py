"""``emovox study``: several recipes as one study (the IEMOCAP paper's 19 backbones x 5 folds), one job per fold."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from emovox.cli import app
from emovox.cli.experiment import EXIT_INCOMPLETE, SET_HELP, fold_indices


@app.command()
def study(
    recipes: list[Path] = typer.Argument(..., help="Experiment YAMLs, e.g. recipes/iemocap/iemocap-*.yaml."),
    set_: list[str] = typer.Option(None, "--set", help=SET_HELP + " Applied to every recipe."),
    out_root: Path = typer.Option(Path("runs"), "--out-root", help="Each recipe runs in OUT_ROOT/<its name>."),
    list_jobs: bool = typer.Option(False, "--list-jobs", help="Print one `emovox cv ... --fold K` per fold of every recipe."),
    collect: bool = typer.Option(False, "--collect", help="Collect every recipe's finished folds; write OUT_ROOT/study.md."),
    executor: str = typer.Option(None, "--executor", help="Run every fold job through submitit: local | slurm."),
    executor_param: list[str] = typer.Option(None, "--executor-param", help="submitit parameter key=value (repeatable)."),
    wait: bool = typer.Option(False, "--wait", help="--executor slurm: wait for the jobs, then collect."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run, list or collect a study: every recipe's cross-validation, then one table of all of them.

    Without --list-jobs, --collect or --executor the recipes run one after the other here.
    """
    from emovox.cli import jobs as job_tools
    from emovox.config import load_config
    from emovox.errors import EmovoxError

    if list_jobs and (collect or executor):
        raise EmovoxError("--list-jobs prints the jobs only; pass it alone")
    configs = [(path, load_config(path, set_)) for path in recipes]
    names = [cfg.name for _, cfg in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EmovoxError(f"recipes share the name(s) {twice}, so their run directories would collide; give each its own name")
    if list_jobs or executor:
        listed = [
            job for path, cfg in configs for job in job_tools.fold_jobs(path, set_ or [], out_root / cfg.name, fold_indices(cfg))
        ]
        if list_jobs:
            for job in listed:
                typer.echo(job.command())
            recipes_text = " ".join(str(p) for p in recipes)
            Console(stderr=True).print(
                f"{len(listed)} fold job(s) over {len(configs)} recipe(s); when they have ended: "
                f"emovox study {recipes_text} --out-root {out_root} --collect"
            )
            return
        wait = wait or executor == "local"
        failed = job_tools.submit(listed, executor, out_root / "submitit", job_tools.parse_params(executor_param), wait=wait)
        for f in failed:
            Console(stderr=True).print(f"[bold red]failed:[/] {f}")
        if not wait:
            typer.echo(f"submitted {len(listed)} job(s); collect with --collect when they have ended")
            return
        collect = True
    if not collect:
        from emovox.training.runner import run_cv

        for _, cfg in configs:
            run_cv(cfg, out_root / cfg.name, progress=not quiet)
    rows = collect_study(configs, out_root)
    print_study(rows)
    missing = [m for r in rows for m in r["missing"]]
    if missing:
        Console(stderr=True).print(f"[bold yellow]incomplete:[/] {len(missing)} part(s) missing; see {out_root}/study.md")
        raise typer.Exit(EXIT_INCOMPLETE)


def collect_study(configs: list, out_root: Path) -> list[dict]:
    """One row per recipe from its collected results; ``study.md`` and ``study.json`` under ``out_root``."""
    from emovox.atomic import atomic_write_json, atomic_write_text
    from emovox.training.runner import collect_cv

    rows = []
    for path, cfg in configs:
        out = out_root / cfg.name
        row = {"name": cfg.name, "recipe": str(path), "directory": str(out), "missing": [], "folds_done": 0, "folds": None}
        if not (out / "run.json").is_file():
            row["missing"] = ["every fold (not started)"]
        else:
            collected = collect_cv(cfg, out)
            row.update(missing=collected.missing, folds_done=len(collected.done))
            p = collected.payload
            if p is not None:
                row.update(
                    pooled_ua=p["pooled"]["ua"], pooled_wa=p["pooled"]["wa"], mean_ua=p["mean"]["ua"], std_ua=p["std"]["ua"],
                    mean_wa=p["mean"]["wa"], std_wa=p["std"]["wa"],
                    folds=len(p["folds"]) + sum(m.startswith("fold") for m in collected.missing),
                    baseline_pooled_ua=(p.get("baseline") or {}).get("pooled", {}).get("ua"), backbone=p["backbone"],
                )  # fmt: skip
        rows.append(row)
    atomic_write_json(out_root / "study.json", {"recipes": rows})
    atomic_write_text(out_root / "study.md", study_markdown(rows))
    return rows


def study_markdown(rows: list[dict]) -> str:
    pct = lambda x: "" if x is None else f"{100 * x:.2f}"  # noqa: E731
    lines = [
        "# Study",
        "",
        "Pooled over every collected fold; mean ± std over folds. A row with missing parts covers its finished folds only.",
        "",
        "| recipe | folds done | UA pooled (%) | WA pooled (%) | UA mean ± std (%) | WA mean ± std (%) "
        "| baseline UA pooled (%) | missing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        done = "pooled_ua" in r
        lines.append(
            f"| {r['name']} | {r['folds_done']}{'/' + str(r['folds']) if r.get('folds') else ''} | "
            f"{pct(r.get('pooled_ua'))} | {pct(r.get('pooled_wa'))} | "
            f"{pct(r['mean_ua']) + ' ± ' + pct(r['std_ua']) if done else ''} | "
            f"{pct(r['mean_wa']) + ' ± ' + pct(r['std_wa']) if done else ''} | {pct(r.get('baseline_pooled_ua'))} | "
            f"{', '.join(r['missing']) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def print_study(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="study", show_edge=False)
    for col in ("recipe", "folds", "UA pooled", "WA pooled", "UA mean ± std", "baseline UA", "missing"):
        table.add_column(col, justify="left" if col in ("recipe", "missing") else "right")
    for r in rows:
        done = "pooled_ua" in r
        table.add_row(
            r["name"],
            f"{r['folds_done']}" + (f"/{r['folds']}" if r.get("folds") else ""),
            f"{100 * r['pooled_ua']:.2f}" if done else "",
            f"{100 * r['pooled_wa']:.2f}" if done else "",
            f"{100 * r['mean_ua']:.2f} ± {100 * r['std_ua']:.2f}" if done else "",
            f"{100 * r['baseline_pooled_ua']:.2f}" if r.get("baseline_pooled_ua") is not None else "",
            ", ".join(r["missing"]) or "-",
        )
    Console().print(table)

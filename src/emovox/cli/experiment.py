"""``emovox cv``, ``emovox train`` and ``emovox evaluate``: the main job."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from emovox.cli import app

SET_HELP = "Override a config field, e.g. --set train.lr=1e-4 --set model.mode=frozen (repeatable)."


#: Exit code of ``emovox cv --collect`` (and ``study --collect``) when some folds are not finished yet.
EXIT_INCOMPLETE = 3


@app.command()
def cv(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Experiment YAML (see recipes/)."),
    set_: list[str] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    out: Path = typer.Option(None, "--out", metavar="DIR", help="Run directory (default runs/<name>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Continue the run already in --out (the default): finished folds are kept and an interrupted "
        "fold resumes from its last epoch checkpoint. --no-resume refuses a directory that holds a run.",
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the run already in --out and start over."),
    fold: list[int] = typer.Option(
        None,
        "--fold",
        help="Train only fold K (repeatable; 1-based, as fold_K/) and write nothing another fold's job writes; "
        "then --collect. For SLURM arrays: --fold $SLURM_ARRAY_TASK_ID.",
    ),
    collect: bool = typer.Option(
        False, "--collect", help="Aggregate the finished folds into results.json (trains nothing); names the missing ones."
    ),
    point: int = typer.Option(
        None, "--point", min=1, help="With --fold: fit only grid point J of the config's search (then run the fold itself)."
    ),
    list_jobs: bool = typer.Option(False, "--list-jobs", help="Print one `emovox cv ... --fold K` command per fold and exit."),
    points: bool = typer.Option(
        False, "--points", help="With --list-jobs: one job per fold and search grid point (run them before the fold jobs)."
    ),
    executor: str = typer.Option(
        None, "--executor", help="Run the fold jobs through submitit: local (subprocesses here) or slurm (a job array)."
    ),
    executor_param: list[str] = typer.Option(
        None, "--executor-param", help="submitit parameter key=value, e.g. timeout_min=600, slurm_partition=gpu (repeatable)."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="--executor slurm: wait for the jobs and collect (local always waits)."
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=1,
        help="Local worker processes (one torch thread each) for the feature extraction and the folds; "
        "same files and results as one process. On a small machine, the number of cores.",
    ),
) -> None:
    """Cross-validate a config over every fold of its protocol.

    Restartable: a run killed at any point (even mid-epoch) continues where it stopped when the
    same command is run again, and ends with the same numbers as an uninterrupted run. On a
    cluster every fold is a job: --list-jobs, --fold K, then --collect (or --executor).
    """
    from emovox.config import load_config
    from emovox.errors import EmovoxError
    from emovox.training import distributed

    if fresh and not resume:
        raise EmovoxError("--fresh and --no-resume contradict each other; pass one of them")
    modes = [m for m, on in (("--fold", bool(fold)), ("--collect", collect), ("--list-jobs", list_jobs)) if on]
    if len(modes) > 1 and not (executor and modes == ["--fold"]):
        raise EmovoxError(f"{' and '.join(modes)} are different steps; pass one of them")
    if fresh and (fold or collect or executor):
        raise EmovoxError("--fresh would delete the other folds' work; delete the run directory yourself, then start the jobs")
    if point is not None and not fold:
        raise EmovoxError("--point J needs --fold K: a grid point is fitted within one fold")
    if points and not list_jobs:
        raise EmovoxError("--points modifies --list-jobs; pass both")
    cfg = load_config(config, set_)
    out = out or Path("runs") / cfg.name
    try:
        if list_jobs or executor:
            from emovox.cli import jobs as job_tools

            folds = fold or fold_indices(cfg)
            listed = job_tools.fold_jobs(config, set_ or [], out, folds, name=cfg.name, points=grid_size(cfg) if points else 0)
            if list_jobs:
                for job in listed:
                    typer.echo(job.command())
                base = ["cv", str(config), *[a for x in (set_ or []) for a in ("--set", x)], "--out", str(out)]
                then = job_tools.Job("collect", [*base, "--collect"]).command()
                if points:
                    then = f"the fold jobs ({job_tools.Job('list', [*base, '--list-jobs']).command()}), then {then}"
                Console(stderr=True).print(f"{len(listed)} job(s); when they have ended: {then}")
                return
            wait = wait or executor == "local"
            failed = job_tools.submit(
                listed, executor, out / "submitit", job_tools.parse_params(executor_param), wait=wait
            )
            if not wait:
                typer.echo(f"submitted {len(listed)} job(s); when they have ended: emovox cv {config} --out {out} --collect")
                return
            for f in failed:
                Console(stderr=True).print(f"[bold red]failed:[/] {f}")
            collect = True
        if fold and not executor:
            from emovox.training.runner import run_fold_jobs

            outcomes = run_fold_jobs(cfg, out, fold, progress=not quiet, point=point)
            if point is not None and distributed.is_main():
                typer.echo(f"grid point {point} of fold(s) {', '.join(map(str, fold))} fitted; then run each fold: --fold K")
            elif distributed.is_main():
                for o in outcomes:
                    m = o.metrics
                    typer.echo(f"fold {o.fold.index} ({o.fold.name}): UA {m.ua:.4f}, WA {m.wa:.4f} on {len(o.ids)} utterances")
                sets = "".join(f" --set {shlex.quote(x)}" for x in set_ or [])
                typer.echo(f"when every fold has ended: emovox cv {config}{sets} --out {out} --collect")
            return
        if collect:
            from emovox.training.runner import collect_cv

            collected = collect_cv(cfg, out)
            if collected.payload is None:
                raise EmovoxError(
                    f"{out}: no fold is finished yet; missing {', '.join(collected.missing)}. "
                    f"Run them with `emovox cv {config} --out {out} --fold K` (--list-jobs prints every command)"
                )
            print_cv_summary(cfg, collected.payload, out)
            if collected.missing:
                Console(stderr=True).print(
                    f"[bold yellow]incomplete:[/] {len(collected.missing)} missing: {', '.join(collected.missing)}; "
                    f"results.json and report.md cover the {len(collected.done)} finished fold(s) only"
                )
                raise typer.Exit(EXIT_INCOMPLETE)
            return
        from emovox.training.runner import run_cv

        payload = run_cv(cfg, out, progress=not quiet, resume=resume, fresh=fresh, jobs=jobs)
        if payload is not None:  # None on the other processes of a multi-process run
            print_cv_summary(cfg, payload, out)
    finally:
        distributed.end()


def grid_size(cfg) -> int:
    from emovox.training.search import grid_points

    return len(grid_points(cfg.search))


def fold_indices(cfg) -> list[int]:
    """The folds a config runs: its ``folds``, or every fold of its protocol on its corpus."""
    if cfg.folds is not None:
        return sorted(set(cfg.folds))
    from emovox.splits.protocols import make_folds

    return [f.index for f in make_folds(cfg.open_corpus(), cfg.protocol, cfg.validation, seed=cfg.train.seed)]


def print_cv_summary(cfg, payload: dict, out: Path) -> None:
    from emovox.evaluation.metrics import CVResult
    from emovox.evaluation.reporting import print_summary

    result = CVResult.from_dict(payload)
    console = Console()
    print_summary(result, console=console, title=f"{cfg.name} ({payload['kind']}: {payload['backbone']}, {payload['mode']})")
    console.print(
        f"[bold]UA {payload['mean']['ua']:.4f} ± {payload['std']['ua']:.4f}[/] (mean ± std over {len(payload['folds'])} folds), "
        f"pooled UA {payload['pooled']['ua']:.4f}, WA {payload['pooled']['wa']:.4f}; {payload['seconds']:.0f} s. "
        f"Results in {out}/ (results.json, report.md, predictions.csv, confusion.png, learning_curves.png)"
    )
    b = payload.get("baseline")
    if b:
        diff = payload["pooled"]["ua"] - b["pooled"]["ua"]
        style = "green" if diff >= 0 else "bold red"
        console.print(
            f"baseline ({b['description']}): pooled UA {b['pooled']['ua']:.4f}, WA {b['pooled']['wa']:.4f}; "
            f"the recipe is [{style}]{100 * diff:+.2f} points[/] on pooled UA (same folds; `baseline: false` turns this off)"
        )
    print_corpus_summary(payload, console)
    warn_skipped(payload["skipped"], f"{out}/report.md ('Skipped utterances') and results.json ('skipped')")


def print_corpus_summary(payload: dict, console: Console) -> None:
    """Per test corpus (runs over several corpora), the train -> test cells, and the text-only control."""
    from rich.table import Table

    per = payload.get("per_corpus") or {}
    base = (payload.get("baseline") or {}).get("per_corpus") or {}
    text = ((payload.get("control") or {}).get("text") or {}).get("per_corpus") or {}
    if len(per) > 1:
        table = Table(title="per test corpus", show_edge=False)
        for col in ("corpus", "n", "classes", "UA (%)", "baseline UA (%)", "text-only UA (%)", "chance (%)", "ECE"):
            table.add_column(col, justify="left" if col == "corpus" else "right")
        for name, r in per.items():
            absent = f" (no {', '.join(r['absent_classes'])})" if r["absent_classes"] else ""
            pct = lambda d: f"{100 * d['ua']:.2f}" if d else "-"  # noqa: E731
            table.add_row(name + absent, str(r["n"]), str(len(r["classes_present"])), f"{100 * r['ua']:.2f}",
                          pct(base.get(name)), pct(text.get(name)), f"{100 * r['chance_ua']:.1f}", f"{r['ece']:.3f}")
        console.print(table)
    if payload.get("corpus_matrix"):
        cells = ", ".join(f"{c['train']} -> {c['test']} {100 * c['ua']:.1f}" for c in payload["corpus_matrix"])
        console.print(f"train -> test UA (%): {cells} (corpus_matrix.csv, corpus_matrix.png)", highlight=False)
    control = (payload.get("control") or {}).get("text")
    if control:
        console.print(
            f"text-only control ({control['transcripts']}): pooled UA {control['pooled']['ua']:.4f} against the recipe's "
            f"{payload['pooled']['ua']:.4f}; near chance means the words do not give the label away",
            highlight=False,
        )


def warn_skipped(skipped: list[dict], where: str) -> None:
    """One warning line on stderr with how many utterances were left out, and why, by kind."""
    if not skipped:
        return
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.get("kind", "audio")] = counts.get(s.get("kind", "audio"), 0) + 1
    kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
    Console(stderr=True).print(f"[yellow]warning: {len(skipped)} utterance(s) skipped ({kinds}); see {where}[/]")


@app.command()
def train(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Experiment YAML (see recipes/)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Recognizer directory to create."),
    set_: list[str] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    cv_results: list[Path] = typer.Option(
        None, "--cv-results", metavar="RUN",
        help="A cv run (its directory or results.json) to quote in the model card (repeatable: e.g. an in-corpus run and "
        "a leave-one-corpus-out run). Default: the finished runs of this recipe found under --runs-dir.",
    ),
    runs_dir: Path = typer.Option(
        Path("runs"), "--runs-dir", metavar="DIR",
        help="Where to look for cv runs of this recipe (same corpora, labels and model) when no --cv-results is given.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    force: bool = typer.Option(
        False, "--force",
        help="Replace the recognizer already in --out, or write into a non-empty folder (nothing else in it is deleted).",
    ),
    runtime: bool = typer.Option(
        True, "--runtime/--no-runtime",
        help="Also write runtime/ (the ONNX encoder and numpy head that predict, timeline and serve use without torch), "
        "for the audio recognizers it covers.",
    ),
) -> None:
    """Train one recognizer on the whole corpus (a held-out speaker group picks the epoch).

    --out must be a new or empty folder (or one left by an interrupted train, which is
    continued); a folder holding a recognizer or other files is refused unless --force.
    """
    from emovox.config import load_config
    from emovox.training import distributed
    from emovox.training.final import train_recognizer

    cfg = load_config(config, set_)
    try:
        rec = train_recognizer(cfg, out, progress=not quiet, cv_results=cv_results or None, force=force, runtime=runtime,
                               runs_dir=runs_dir)
        main = distributed.is_main()
    finally:
        distributed.end()
    if not main:  # several processes trained one recognizer: the main one reports
        return
    t = rec.info["training"]
    choices = t.get("choices") or {}
    if "select" in choices:  # a logistic head: no epochs; say what was chosen and how
        chosen = [f"C = {choices['C']:g}"] if "C" in choices else []
        chosen += [f"layers {choices['layers']}"] if "layers" in choices else []
        how = f"chosen by {choices['select']}" + (", refitted on all training data" if choices.get("refit") else "")
        typer.echo(f"saved {out}: {len(rec.labels)} labels, logistic head ({', '.join(chosen) or 'fixed settings'}; {how})")
    else:
        from emovox.model_card import selection_text

        typer.echo(f"saved {out}: {len(rec.labels)} labels, best epoch {t['best_epoch']}, {selection_text(t)}")
    for found in t.get("evaluations_found") or []:
        typer.echo(f"model card quotes {found} (a finished cv run of this recipe; --cv-results to choose)")
    if rec.info.get("runtime"):
        r = rec.info["runtime"]
        typer.echo(f"runtime: {out}/runtime ({r['runs']}; agrees with torch within {r['check']['fp32']['max_abs_diff']:.1e})")
    warn_skipped(t.get("skipped", []), f"{out}/emovox.json ('training' -> 'skipped')")


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="Recognizer directory from `emovox train`."),
    spec: str = typer.Argument(..., metavar="SPEC", help="Corpus spec FORMAT:PATH, e.g. emodb:/data/emodb or manifest:test.csv."),
    json_out: Path = typer.Option(
        None, "--json", metavar="FILE",
        help="Write the metrics and every utterance's prediction (id, true, pred, probabilities) as JSON here.",
    ),
    on_bad_audio: str = typer.Option(
        "skip", "--on-bad-audio", metavar="skip|error",
        help="skip (default: leave unusable utterances out, count them here and list them in --json) | error.",
    ),
    labels: str = typer.Option(
        "all", "--labels", metavar="all|shared",
        help="all (default: every label of the corpus must be one the recognizer knows) | shared (a corpus it was not "
        "trained on: leave out the utterances of labels it does not know, and also score its answers restricted to the "
        "labels the corpus has).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar; the tables and warnings are still printed."),
) -> None:
    """Score a trained recognizer on a corpus: WA, UA, macro-F1, per-class scores and the confusion matrix.

    A recognizer that normalises per speaker takes each speaker's statistics from the corpus's own clips
    (its speaker ids: a manifest's speaker column)."""
    import time

    from emovox.errors import EmovoxError

    t0 = time.time()
    if on_bad_audio not in ("error", "skip"):
        raise EmovoxError(f"--on-bad-audio {on_bad_audio!r}: use error or skip")
    from emovox.corpora import load_corpus
    from emovox.evaluation.reporting import print_evaluation, write_json
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import evaluate_recognizer

    corpus = load_corpus(spec)
    rec = Recognizer.load(model_dir)
    ev = evaluate_recognizer(rec, corpus, on_bad_audio=on_bad_audio, progress=not quiet, labels=labels)
    metrics, examples, probs, skipped = ev.metrics, ev.examples, ev.probs, ev.skipped
    console = Console()
    print_evaluation(metrics, console=console, title=f"{model_dir} on {spec}")
    if ev.left_out:
        console.print(
            "left out (labels the recognizer does not know): "
            + ", ".join(f"{label} {n}" for label, n in ev.left_out.items()), highlight=False,
        )
    if ev.restricted is not None:
        r = ev.restricted
        console.print(
            f"answers restricted to the {len(ev.answer_labels)} labels the corpus has ({', '.join(ev.answer_labels)}): "
            f"WA {100 * r.wa:.2f}, UA {100 * r.ua:.2f}, macro-F1 {100 * r.macro_f1:.2f} "
            f"(above: the recognizer's own answers over its {len(rec.labels)} labels)", highlight=False,
        )
    if json_out:
        labels = rec.labels
        predictions = [
            {
                "id": e.id,
                "true": corpus[e.id].label,
                "pred": labels[int(p.argmax())],
                "probabilities": {label: round(float(x), 6) for label, x in zip(labels, p, strict=True)},
            }
            for e, p in zip(examples, probs, strict=True)
        ]
        write_json(
            json_out,
            dict(
                metrics.to_dict(), recognizer=str(model_dir), corpus=spec, utterances=len(examples),
                skipped=[s.to_dict() for s in skipped], predictions=predictions, labels=labels,
                left_out=ev.left_out or {},
                restricted=None if ev.restricted is None else dict(ev.restricted.to_dict(), answers=list(ev.answer_labels)),
            ),
        )
    warn_skipped([s.to_dict() for s in skipped], str(json_out) if json_out else "--json FILE for the list")
    console.print(
        f"evaluated {len(examples)} utterance(s) in {time.time() - t0:.1f} s" + (f"; wrote {json_out}" if json_out else ""),
        highlight=False,
    )

"""What a vote writes: a run directory like any other (``write_vote``: ``predictions.csv``, ``fold_k/``,
``results.json``, ``report.md``), plus ``vote.json`` (``describe``), ``candidates.csv`` (every candidate's selection
score) and the report's "Vote" section (``vote_markdown``), so a vote is compared, given confidence intervals or
voted on again like any run.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np

from emovox.atomic import atomic_write_text
from emovox.evaluation.metrics import HEADLINE
from emovox.evaluation.predictions import PREDICTIONS, VALID_PREDICTIONS, PredictionTable, write_predictions
from emovox.evaluation.voting import OPTIMISTIC, Vote, VoteError


def describe(vote: Vote) -> dict:
    """The ``vote`` block of the output's ``results.json``: what was voted and what each fold chose."""
    names = [str(r.path) for r in vote.runs]
    return {
        "method": vote.method,
        "tie_rule": "most votes; then largest summed probability; then the first member's label"
        if vote.method == "hard"
        else None,
        "members": names,
        "k": vote.k,
        "choose_on": vote.choose_on,
        "select_metric": vote.metric,
        "optimistic": vote.optimistic,
        "member_test_scores": {n: s for n, s in zip(names, vote.member_scores, strict=True)},
        "folds": [
            {
                "fold": f.index,
                "name": f.name,
                "members": [names[i] for i in f.chosen.members],
                "weights": list(f.chosen.weights) if f.chosen.weights is not None else None,
                "selection_score": None if np.isnan(f.chosen.score) else f.chosen.score,
            }
            for f in vote.folds
        ],
    }


def write_vote(vote: Vote, out_dir: Path, *, title: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Write the vote as a run directory; returns its ``results.json`` content (with confidence intervals)."""
    from emovox.evaluation import reporting
    from emovox.evaluation.stats import add_confidence_intervals

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VoteError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "vote.json").is_file():
        raise VoteError(f"--out {out}: not empty and not an earlier vote; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    keep = {f"fold_{f.index}" for f in vote.folds}
    for stale in out.glob("fold_*"):  # an earlier vote with more folds
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale)
    labels = vote.labels
    for f in vote.folds:
        fold_dir = out / f"fold_{f.index}"
        fold_dir.mkdir(exist_ok=True)
        _write_table(fold_dir / PREDICTIONS, f.test)
        if f.valid is not None:
            _write_table(fold_dir / VALID_PREDICTIONS, f.valid)
        elif (fold_dir / VALID_PREDICTIONS).exists():
            (fold_dir / VALID_PREDICTIONS).unlink()
    tables = [f.test for f in vote.folds]
    rows = [(uid, name, t, p) for tb in tables for uid, name, t, p in zip(tb.ids, tb.folds, tb.true, tb.probs, strict=True)]
    write_predictions(out / PREDICTIONS, rows, labels, preds=np.concatenate([t.pred for t in tables]).tolist())
    splits = vote.runs[0].path / "splits"
    if splits.is_dir():
        shutil.rmtree(out / "splits", ignore_errors=True)
        shutil.copytree(splits, out / "splits")
    title = title or f"{vote.method} vote of {len(vote.runs)} runs"
    reporting.write_report(vote.result, out, title=title)

    payload = vote.result.to_dict()
    payload.update({"name": title, "label_set": list(labels), "vote": describe(vote)})
    speakers = None
    if vote.result.speaker_independent and splits.is_dir():
        known = vote.runs[0].speakers()
        ids = [i for t in tables for i in t.ids]
        if all(i in known for i in ids):
            speakers = [known[i] for i in ids]
    add_confidence_intervals(
        payload,
        np.concatenate([t.true for t in tables]),
        np.concatenate([t.pred for t in tables]),
        speakers=speakers,
        n_boot=n_boot,
        seed=seed,
    )
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "vote.json", json.dumps(describe(vote), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "candidates.csv", candidates_csv(vote))
    report = out / "report.md"
    text = (
        report.read_text(encoding="utf-8").rstrip("\n")
        + "\n\n"
        + vote_markdown(vote)
        + "\n"
        + reporting.ci_markdown(payload["confidence_intervals"])
    )
    atomic_write_text(report, text)
    return payload


def _write_table(path: Path, t: PredictionTable) -> None:
    write_predictions(path, zip(t.ids, t.folds, t.true, t.probs, strict=True), t.labels, preds=t.pred.tolist())


def candidates_csv(vote: Vote) -> str:
    """One row per fold and candidate: members, weights, its selection score and whether it was chosen."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", "members", "weights", f"{vote.metric}_on_{vote.choose_on}", "chosen"])
    for f in vote.folds:
        for c in f.candidates:
            w.writerow([
                f.index,
                ";".join(str(vote.runs[i].path) for i in c.members),
                ";".join(f"{x:.4f}" for x in c.weights) if c.weights is not None else "",
                repr(c.score),
                c == f.chosen,
            ])  # fmt: skip
    return buf.getvalue()


def vote_markdown(vote: Vote) -> str:
    """The report's "Vote" section: method, tie rule, members with their own scores, each fold's choice."""
    from emovox.evaluation.reporting import METRIC_TITLES, fmt_pct, markdown_table

    lines = ["## Vote", ""]
    if vote.optimistic:
        lines += [f"> ⚠ **{OPTIMISTIC}** (the paper's way; not an honest estimate).", ""]
    method = {
        "hard": "hard majority vote (ties: largest summed probability, then the first member's label)",
        "soft": "soft vote (mean probabilities)",
        "weighted": "weighted soft vote (weights on a grid, chosen per fold)",
    }[vote.method]
    choice = "nothing to choose: every member votes"
    if vote.folds and vote.folds[0].candidates:
        title = METRIC_TITLES.get(vote.metric, "(lowest) log-loss").replace(" (%)", "")
        choice = f"each fold chose the best {title} on its {vote.choose_on} predictions"
        if vote.k is not None:
            choice += f" among every {vote.k}-subset of the members"
    lines += [f"Method: {method}; {choice}.", ""]
    header = ["Member", *(METRIC_TITLES[m] for m in HEADLINE)]
    rows = [[f"`{r.path}`", *(fmt_pct(s[m]) for m in HEADLINE)] for r, s in zip(vote.runs, vote.member_scores, strict=True)]
    rows.append(["**vote**", *(fmt_pct(getattr(vote.result.pooled, m)) for m in HEADLINE)])
    lines += ["Pooled test scores of each member and of the vote:", "", markdown_table(header, rows)]
    if vote.folds and vote.folds[0].candidates:
        rows = [
            [f.index, f.name, ", ".join(f"`{vote.runs[i].path.name}`" for i in f.chosen.members),
             ", ".join(f"{w:.2f}" for w in f.chosen.weights) if f.chosen.weights is not None else "",
             f"{-f.chosen.score:.4f}" if vote.metric == "log_loss" else fmt_pct(f.chosen.score)]
            for f in vote.folds
        ]  # fmt: skip
        lines += [
            "Chosen per fold:",
            "",
            markdown_table(
                ["Fold", "Name", "Members", "Weights",
                 f"{vote.metric} on {vote.choose_on}" + ("" if vote.metric == "log_loss" else " (%)")], rows,
            ),
        ]
    return "\n".join(lines)

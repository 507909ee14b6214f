"""Voting ensembles over the saved predictions of several runs (the RAVDESS voting paper).

Members are finished run directories of the same corpus and protocol: the same folds, the same
test (and validation) utterances with the same truth, the same label set; anything else is
refused, naming the runs, the fold and the difference. Nothing is retrained: a vote reads each
run's ``fold_k/predictions.csv`` and, when it has to choose, ``fold_k/valid_predictions.csv``.

Methods:

``hard`` (the paper's)
    Each member votes for its predicted label (its ``pred`` column); the label with most votes
    wins. **Tie rule**: among the labels with the most votes, the one with the largest sum of
    the members' probabilities for it (sums within 1e-9 count as equal); if still tied, the
    label voted by the first member, in the order the runs were given, among those still tied.
    The vote's "probabilities" are the vote shares (votes / members).
``soft``
    The mean of the members' probabilities; the prediction is its argmax (an exact tie goes to
    the label first in label-set order).
``weighted``
    A weighted mean of the members' probabilities, weights on the grid ``{0, 1/G, ..., 1}``
    summing to 1 (G = ``grid``, default 10), plus the equal weights, which are tried first.

Choosing: with ``k`` every ``k``-subset of the members is a candidate (in
``itertools.combinations`` order); ``weighted`` adds its weight grid per subset. Each fold picks
the candidate with the best ``metric`` (default UA) on **its own validation predictions**; the
first best in enumeration order wins ties. ``log_loss`` (the mean negative log-probability of
the true class, lower is better; its score is its negative) is the choice for small validation
parts: on EmoDB one validation speaker is scored 100 % by most subsets, so a count-based metric
leaves the choice to the tie rule, while the log-loss still tells the candidates apart. The
test predictions are only combined afterwards, so the choice never reads a test label.
``choose_on="test"`` picks on the fold's test predictions instead, as the paper did ("we
tested all possible five model voting ensembles and report ... the most promising"): available
to reproduce it, and marked OPTIMISTIC in every output. Runs validated with ``paper``
validation (their validation part is the test part) are marked the same way. With neither ``k``
nor ``weighted`` there is nothing to choose and no validation predictions are needed.

The output (``vote_report.write_vote``) is itself a run directory (``predictions.csv``, ``fold_k/``,
``results.json``, ``report.md``, plus ``candidates.csv``, every candidate's selection score), so a
vote is compared (``emovox compare``), given confidence intervals or voted on again like any run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emovox.errors import EmovoxError
from emovox.evaluation.metrics import HEADLINE, CVResult, aggregate, compute_metrics, headline_scores
from emovox.evaluation.predictions import PREDICTIONS, PredictionTable, Run, load_run

METHODS = ("hard", "soft", "weighted")
CHOOSE_ON = ("valid", "test")
TIE_TOLERANCE = 1e-9
OPTIMISTIC = "OPTIMISTIC: members/weights were chosen on the test predictions, so the test score is biased upwards"


class VoteError(EmovoxError):
    """Runs cannot be voted together (different folds, utterances, truth or labels) or a bad option."""


# --- combining one set of predictions -------------------------------------------------------


def hard_vote(preds: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of ``preds`` ``[M, N]`` with the module's tie rule; returns (labels ``[N]``, vote shares ``[N, C]``)."""
    m, n = preds.shape
    c = probs.shape[-1]
    rows = np.arange(n)
    votes = np.zeros((n, c))
    for member in preds:
        np.add.at(votes, (rows, member), 1.0)
    tied = votes == votes.max(axis=1, keepdims=True)
    summed = np.where(tied, probs.sum(axis=0), -np.inf)
    tied &= summed >= summed.max(axis=1, keepdims=True) - TIE_TOLERANCE
    out = tied.argmax(axis=1)
    open_ = tied.sum(axis=1) > 1
    for member in preds:  # still tied: the first member's label among the tied ones
        hit = open_ & tied[rows, member]
        out[hit] = member[hit]
        open_ &= ~hit
    return out, votes / m


def soft_vote(probs: np.ndarray, weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Weighted) mean of ``probs`` ``[M, N, C]``; returns (argmax labels ``[N]``, mean probabilities ``[N, C]``)."""
    w = np.full(len(probs), 1.0 / len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = np.tensordot(w, probs, axes=1)
    return mean.argmax(axis=1), mean


def combine(
    method: str, tables: Sequence[PredictionTable], weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vote aligned prediction tables (same ids in the same order) by ``method``."""
    probs = np.stack([t.probs for t in tables])
    if method == "hard":
        return hard_vote(np.stack([t.pred for t in tables]), probs)
    return soft_vote(probs, weights if method == "weighted" else None)


def weight_grid(k: int, grid: int) -> Iterator[tuple[float, ...]]:
    """Equal weights first, then every ``(a_1/G, ..., a_k/G)`` with whole ``a_i >= 0`` summing to G."""
    equal = tuple([1.0 / k] * k)
    yield equal
    for cut in itertools.combinations(range(grid + k - 1), k - 1):  # stars and bars
        parts = np.diff([-1, *cut, grid + k - 1]) - 1
        w = tuple(float(x) / grid for x in parts)
        if not np.allclose(w, equal):
            yield w


# --- choosing and voting whole runs ---------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    members: tuple[int, ...]
    weights: tuple[float, ...] | None
    score: float


@dataclass
class FoldVote:
    index: int
    name: str
    chosen: Candidate
    candidates: list[Candidate]
    test: PredictionTable
    valid: PredictionTable | None


@dataclass
class Vote:
    method: str
    runs: list[Run]
    k: int | None
    choose_on: str
    metric: str
    optimistic: bool
    folds: list[FoldVote]
    result: CVResult
    member_scores: list[dict[str, float]] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.runs[0].labels


def vote_runs(
    run_dirs: Sequence[Path | str],
    *,
    method: str = "hard",
    k: int | None = None,
    choose_on: str = "valid",
    metric: str = "ua",
    grid: int = 10,
    progress: bool = False,
) -> Vote:
    """Vote the runs fold by fold (see the module docstring); nothing is written."""
    if method not in METHODS:
        raise VoteError(f"unknown voting method {method!r}; choose one of {', '.join(METHODS)}")
    if choose_on not in CHOOSE_ON:
        raise VoteError(f"--choose-on must be valid or test, not {choose_on!r}")
    if metric not in SELECT_METRICS:
        raise VoteError(f"unknown metric {metric!r}; choose one of {', '.join(SELECT_METRICS)}")
    if grid < 1:
        raise VoteError(f"the weight grid needs at least 1 step, got {grid}")
    if len(run_dirs) < 2:
        raise VoteError("a vote needs at least two runs")
    if len({Path(d).resolve() for d in run_dirs}) != len(run_dirs):
        raise VoteError("a run is given twice; give each run directory once")
    runs = [load_run(Path(d)) for d in run_dirs]
    if k is not None and not 1 <= k <= len(runs):
        raise VoteError(f"--k {k}: choose between 1 and the number of runs ({len(runs)})")
    chooses = (k is not None and k < len(runs)) or method == "weighted"
    need_valid = chooses and choose_on == "valid"
    if need_valid:
        for r in runs:
            _refuse_in_sample_validation(r)
    folds_of = _aligned_folds(runs, need_valid)

    from tqdm.auto import tqdm

    fold_votes: list[FoldVote] = []
    optimistic = chooses and choose_on == "test"
    for index, members in tqdm(folds_of.items(), desc="vote", unit="fold", disable=not progress):
        tests = [f.test for f in members]
        valids = [f.valid for f in members] if all(f.valid is not None for f in members) else None
        if chooses:
            selection = tests if choose_on == "test" else valids
            if choose_on == "valid" and set(valids[0].ids) & set(tests[0].ids):  # type: ignore[index]
                optimistic = True  # "paper" validation: the validation part is (or overlaps) the test part
            candidates = _score_candidates(method, selection, k or len(runs), metric, grid)  # type: ignore[arg-type]
            chosen = max(candidates, key=lambda c: c.score)  # first best in enumeration order
        else:
            candidates, chosen = [], Candidate(tuple(range(len(runs))), None, float("nan"))
        test = _voted_table(method, tests, chosen)
        valid = _voted_table(method, valids, chosen) if valids is not None else None
        fold_votes.append(FoldVote(index, members[0].name, chosen, candidates, test, valid))

    labels = runs[0].labels
    per_fold = [compute_metrics(f.test.true, f.test.pred, labels) for f in fold_votes]
    speaker_flags = {r.speaker_independent for r in runs}
    result = aggregate(
        per_fold,
        labels=labels,
        fold_names=[f.name for f in fold_votes],
        protocol=runs[0].protocol,
        speaker_independent=False if False in speaker_flags else (True if speaker_flags == {True} else None),
    )
    member_scores = []
    for i in range(len(runs)):
        true = np.concatenate([folds_of[f.index][i].test.true for f in fold_votes])
        pred = np.concatenate([folds_of[f.index][i].test.pred for f in fold_votes])
        member_scores.append(compute_metrics(true, pred, labels).scores.to_dict())
    return Vote(method, runs, k, choose_on, metric, optimistic, fold_votes, result, member_scores)


def _refuse_in_sample_validation(run: Run) -> None:
    """A head refitted on its validation part wrote, before emovox marked it, validation predictions
    from the refitted model: in-sample, so a choice made on them prefers that run whatever it is worth."""
    choices = run.results.get("choices") or []
    if any(isinstance(c, dict) and c.get("refit") and "valid_predictions" not in c for c in choices):
        raise VoteError(
            f"{run.path}: its head was refitted on the validation speakers (refit: true) by an emovox that then wrote "
            "validation predictions from the refitted model, so they are in-sample and cannot choose members; "
            "run it again (emovox cv ... --fresh), or vote without choosing (no --k, no --weighted)"
        )


def _aligned_folds(runs: list[Run], need_valid: bool) -> dict[int, list]:
    """Fold index -> each run's ``RunFold``, tables reordered to the first run's ids; refuses mismatches."""
    first = runs[0]
    for r in runs[1:]:
        if r.labels != first.labels:
            raise VoteError(
                f"runs disagree on the label set: {first.path} has {list(first.labels)}, {r.path} has {list(r.labels)}"
            )
    folds = [r.folds(need_valid=need_valid) for r in runs]
    indices = [[f.index for f in fs] for fs in folds]
    if not indices[0]:
        raise VoteError(f"{first.path}: no fold_k/{PREDICTIONS}; vote over finished runs of emovox cv")
    for r, idx in zip(runs[1:], indices[1:], strict=True):
        if idx != indices[0]:
            raise VoteError(f"{r.path} has folds {idx} but {first.path} has {indices[0]}; vote over runs of the same protocol")
    out: dict[int, list] = {}
    for n, index in enumerate(indices[0]):
        members = [fs[n] for fs in folds]
        ref = members[0]
        aligned = [ref]
        for r, f in zip(runs[1:], members[1:], strict=True):
            test = _align(ref.test, f.test, first, r, index, "test")
            valid = None
            if ref.valid is not None and f.valid is not None:
                valid = _align(ref.valid, f.valid, first, r, index, "validation")
            aligned.append(type(f)(f.index, test, valid))
        out[index] = aligned
    return out


def _align(ref: PredictionTable, other: PredictionTable, ref_run: Run, run: Run, fold: int, part: str) -> PredictionTable:
    match = other.aligned_with(ref)
    only_ref, only_other = match.only_ref, match.only_other
    if only_ref or only_other:
        raise VoteError(
            f"fold {fold}: the {part} utterances of {run.path} differ from those of {ref_run.path}: "
            f"{len(only_ref)} only in the first (e.g. {only_ref[:3]}), {len(only_other)} only in the second "
            f"(e.g. {only_other[:3]}); vote over runs of the same corpus, protocol and seed"
        )
    aligned, differ = match.table, match.disagree
    if differ.size:
        i = int(differ[0])
        raise VoteError(
            f"fold {fold}: utterance {ref.ids[i]!r} is {ref.labels[ref.true[i]]!r} in {ref_run.path} but "
            f"{ref.labels[aligned.true[i]]!r} in {run.path} ({differ.size} {part} utterance(s) disagree); the runs "
            "were made on different corpora or label mappings"
        )
    return aligned


#: What a vote's choice can maximise: the headline metrics, or minus the log-loss.
SELECT_METRICS = (*HEADLINE, "log_loss")


def _score(true: np.ndarray, pred: np.ndarray, n_classes: int, metric: str, probs: np.ndarray | None = None) -> float:
    if metric == "log_loss":  # higher is better everywhere else: the score is the negative log-loss
        return -float(-np.log(np.clip(probs[np.arange(len(true)), true], 1e-12, 1.0)).mean())
    confusion = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return float(headline_scores(confusion)[metric])


def _score_candidates(method: str, tables: list[PredictionTable], k: int, metric: str, grid: int) -> list[Candidate]:
    c = len(tables[0].labels)
    truth = tables[0].true
    out = []
    for subset in itertools.combinations(range(len(tables)), k):
        chosen = [tables[i] for i in subset]
        for weights in weight_grid(k, grid) if method == "weighted" else [None]:
            pred, probs = combine(method, chosen, weights)
            out.append(Candidate(subset, weights, _score(truth, pred, c, metric, probs)))
    return out


def _voted_table(method: str, tables: list[PredictionTable], chosen: Candidate) -> PredictionTable:
    pred, probs = combine(method, [tables[i] for i in chosen.members], chosen.weights)
    ref = tables[0]
    return PredictionTable(ref.path, ref.labels, ref.ids, ref.folds, ref.true, pred, probs)


# --- the vote as a run directory --------------------------------------------------------------

"""Bootstrap confidence intervals and paired comparisons of runs.

A test set of a few hundred utterances moves UA by several points when a handful of
predictions flip, so a figure without its uncertainty invites reading noise as progress.
Everything here is a *percentile bootstrap* over resampling **units**:

- ``utterance``: the units are the test utterances (the EmoSPeech paper's "0.6094 ± 0.0349");
- ``speaker``: the units are the test speakers, each drawn with all its utterances (a cluster
  bootstrap). Utterances of one speaker are not independent, so for speaker-independent
  protocols, where a new speaker is the unit of generalisation, this interval is the honest one
  and is wider.

Procedure, fixed so that anyone can reproduce an interval: with ``rng =
numpy.random.default_rng(seed)`` and ``m`` units in a fixed order (utterances in the given order,
speakers sorted), resample ``b`` is ``rng.integers(0, m, size=m)`` for ``b = 1 .. B`` in turn; its
score is the metric of the utterances of the drawn units, each unit counted as often as drawn.
The interval is ``numpy.percentile(scores, [100 (1 - level) / 2, 100 (1 + level) / 2])`` (linear
interpolation), default 95 % with B = 1000. Scores come from ``emovox.evaluation.metrics.headline_scores``
on the summed confusion matrices of the drawn units, so an interval is always an interval of the
very metric that is reported (and tests check it against scikit-learn on each resample).

Paired comparison (``compare``): both runs are scored on the *same* resample each time and the
difference ``A - B`` is collected; its interval excluding 0 is a verdict ("A better" / "B
better"), otherwise "no difference beyond noise". The two-sided bootstrap p-value is
``min(1, 2 min(P(d <= 0), P(d >= 0)))``. Pairing matters: two runs that err on the same hard
utterances differ far less than their separate intervals suggest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emovox.errors import EmovoxError
from emovox.evaluation.metrics import HEADLINE, compute_metrics, headline_scores
from emovox.evaluation.predictions import Run, load_run
from emovox.splits.fold import natural_sorted

DEFAULT_BOOT = 1000
DEFAULT_LEVEL = 0.95
UNITS = ("utterance", "speaker")
VERDICTS = ("A better", "B better", "no difference beyond noise")


class StatsError(EmovoxError):
    """A bootstrap was asked for something it cannot do (no units, bad level, unknown metric)."""


@dataclass(frozen=True)
class Interval:
    """A metric's value on all the data and its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """A paired bootstrap of ``metric(A) - metric(B)`` over the same resampled units."""

    metric: str
    unit: str
    a: Interval
    b: Interval
    difference: Interval
    p_value: float
    verdict: str
    n_utterances: int
    n_units: int
    n_boot: int
    level: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("a", "b", "difference"):
            d[key] = getattr(self, key).to_dict()
        return d


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise StatsError(f"the number of bootstrap resamples must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise StatsError(f"the confidence level must be between 0 and 1 (e.g. 0.95), got {level}")


def unit_confusions(
    y_true: Sequence[int], y_pred: Sequence[int], n_classes: int, groups: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Flattened confusion counts ``[m, C*C]`` of each resampling unit, and the unit names.

    Without ``groups`` every utterance is a unit (in the given order); with them each distinct
    group (speaker) is one, in natural order.
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise StatsError(f"{t.size} true labels but {p.size} predictions; they must pair up")
    if t.size == 0:
        raise StatsError("cannot bootstrap zero utterances")
    cell = t * n_classes + p
    if groups is None:
        units = np.zeros((t.size, n_classes * n_classes), dtype=np.int64)
        units[np.arange(t.size), cell] = 1
        return units, None
    if len(groups) != t.size:
        raise StatsError(f"{len(groups)} speakers for {t.size} utterances; every utterance needs one")
    names = natural_sorted({str(g) for g in groups})
    index = {g: i for i, g in enumerate(names)}
    units = np.zeros((len(names), n_classes * n_classes), dtype=np.int64)
    np.add.at(units, (np.array([index[str(g)] for g in groups]), cell), 1)
    return units, names


def resample_counts(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """``[B, m]``: how often each unit is drawn in each resample (the procedure of the module docstring)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n_units), dtype=np.int64)
    for b in range(n_boot):
        out[b] = np.bincount(rng.integers(0, n_units, size=n_units), minlength=n_units)
    return out


def bootstrap_scores(units: np.ndarray, counts: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Each headline metric on each resample: ``{metric: [B]}``."""
    confusions = (counts @ units).reshape(len(counts), n_classes, n_classes)
    return headline_scores(confusions)


def _interval(value: float, samples: np.ndarray, level: float) -> Interval:
    low, high = np.percentile(samples, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return Interval(float(value), float(low), float(high))


def confidence_intervals(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile bootstrap interval of every headline metric (``groups``: speaker-level)."""
    _check(n_boot, level)
    value = compute_metrics(y_true, y_pred, labels)
    units, _ = unit_confusions(y_true, y_pred, len(labels), groups)
    samples = bootstrap_scores(units, resample_counts(len(units), n_boot, seed), len(labels))
    return {k: _interval(getattr(value, k), samples[k], level) for k in HEADLINE}


def add_confidence_intervals(
    results: dict,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    *,
    speakers: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict:
    """Add ``confidence_intervals`` to a ``results.json`` dict, for its pooled test predictions.

    ``y_true``/``y_pred`` are class indices into ``results["label_set"]`` (or ``labels``), the
    run's pooled test predictions. Utterance-level intervals always; speaker-level ones too when
    ``speakers`` are given. Returns ``results`` (changed in place)::

        "confidence_intervals": {"level": 0.95, "n_boot": 1000, "seed": 0,
            "method": "...", "utterance": {"n_units": 2610, "wa": {"value", "low", "high"}, ...},
            "speaker": {...}}
    """
    labels = results.get("label_set") or results.get("labels")
    if not labels:
        raise StatsError("the results have no label_set; cannot tell which class each index is")
    block: dict[str, Any] = {
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "method": "percentile bootstrap of the pooled test predictions (emovox.evaluation.stats)",
    }
    for unit, groups in (("utterance", None), ("speaker", speakers)):
        if unit == "speaker" and speakers is None:
            continue
        intervals = confidence_intervals(y_true, y_pred, labels, groups=groups, n_boot=n_boot, level=level, seed=seed)
        n_units = len(y_true) if groups is None else len(set(groups))
        block[unit] = {"n_units": n_units, **{k: v.to_dict() for k, v in intervals.items()}}
    results["confidence_intervals"] = block
    return results


def paired_bootstrap(
    y_true: Sequence[int],
    pred_a: Sequence[int],
    pred_b: Sequence[int],
    labels: Sequence[str],
    *,
    metric: str = "ua",
    groups: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Comparison:
    """``metric(A) - metric(B)`` on the same resamples of the same utterances, and a verdict."""
    _check(n_boot, level)
    if metric not in HEADLINE:
        raise StatsError(f"unknown metric {metric!r}; choose one of {', '.join(HEADLINE)}")
    c = len(labels)
    units_a, _ = unit_confusions(y_true, pred_a, c, groups)
    units_b, _ = unit_confusions(y_true, pred_b, c, groups)
    counts = resample_counts(len(units_a), n_boot, seed)
    sa = bootstrap_scores(units_a, counts, c)[metric]
    sb = bootstrap_scores(units_b, counts, c)[metric]
    va = getattr(compute_metrics(y_true, pred_a, labels), metric)
    vb = getattr(compute_metrics(y_true, pred_b, labels), metric)
    d = sa - sb
    diff = _interval(va - vb, d, level)
    p_value = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
    verdict = VERDICTS[0] if diff.low > 0 else VERDICTS[1] if diff.high < 0 else VERDICTS[2]
    return Comparison(
        metric=metric,
        unit="utterance" if groups is None else "speaker",
        a=_interval(va, sa, level),
        b=_interval(vb, sb, level),
        difference=diff,
        p_value=p_value,
        verdict=verdict,
        n_utterances=len(y_true),
        n_units=len(units_a),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


# --- runs ------------------------------------------------------------------------------------


def _speakers_of(run: Run, ids: Sequence[str]) -> list[str]:
    known = run.speakers()
    missing = [i for i in ids if i not in known]
    if missing:
        raise StatsError(f"{run.path}: splits/ names no speaker for {len(missing)} test utterance(s), e.g. {missing[0]!r}")
    return [known[i] for i in ids]


def run_intervals(
    run_dir: Path | str, *, by: str = "utterance", n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0
) -> dict:
    """The ``confidence_intervals`` block of a finished run's pooled test predictions (``by="speaker"`` adds speaker-level)."""
    if by not in UNITS:
        raise StatsError(f"--by must be one of {', '.join(UNITS)}, not {by!r}")
    run = load_run(Path(run_dir))
    table = run.predictions()
    speakers = _speakers_of(run, table.ids) if by == "speaker" else None
    results = {"label_set": list(run.labels)}
    add_confidence_intervals(results, table.true, table.pred, speakers=speakers, n_boot=n_boot, level=level, seed=seed)
    return results["confidence_intervals"]


def compare_runs(
    run_a: Path | str,
    run_b: Path | str,
    *,
    metric: str = "ua",
    by: str = "utterance",
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of two runs' pooled test predictions over the same utterances (or speakers).

    Refuses runs with different label sets, different test utterances (naming some of each
    side's extra ones) or different truths for the same utterance.
    """
    if by not in UNITS:
        raise StatsError(f"--by must be one of {', '.join(UNITS)}, not {by!r}")
    a, b = load_run(Path(run_a)), load_run(Path(run_b))
    if a.labels != b.labels:
        raise StatsError(f"the runs have different label sets: {a.path} {list(a.labels)}, {b.path} {list(b.labels)}")
    ta, tb = a.predictions(), b.predictions()
    match = tb.aligned_with(ta)
    only_a, only_b = match.only_ref, match.only_other
    if only_a or only_b:
        raise StatsError(
            f"the runs were tested on different utterances: {len(only_a)} only in {a.path} (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in {b.path} (e.g. {only_b[:3]}); a paired comparison needs the same test utterances "
            "(same corpus, protocol and skipped utterances)"
        )
    tb, differ = match.table, match.disagree
    if differ.size:
        i = int(differ[0])
        raise StatsError(
            f"utterance {ta.ids[i]!r} is {a.labels[ta.true[i]]!r} in {a.path} but {a.labels[tb.true[i]]!r} in {b.path} "
            f"({differ.size} utterance(s) disagree); the runs were made on different corpora or label mappings"
        )
    groups = _speakers_of(a, ta.ids) if by == "speaker" else None
    comparison = paired_bootstrap(
        ta.true, ta.pred, tb.pred, a.labels, metric=metric, groups=groups, n_boot=n_boot, level=level, seed=seed
    )
    return {
        "run_a": str(a.path),
        "run_b": str(b.path),
        **comparison.to_dict(),
        "speaker_independent": {"a": a.speaker_independent, "b": b.speaker_independent},
    }

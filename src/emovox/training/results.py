"""What a finished run leaves behind: per-utterance predictions, results.json, report.md.

Predictions keep every class probability (``id,fold,true,pred,p_<label>...``, written by
``emovox.evaluation.predictions``), for the test part of each fold (``predictions.csv``) and for its
validation part (``valid_predictions.csv``): votes, late fusion and confidence intervals are
computed from these files, and choosing an ensemble on validation predictions is what keeps the
test fold unseen.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml

from emovox.atomic import atomic_write_json, atomic_write_text
from emovox.corpora.base import Corpus
from emovox.corpora.pool import corpus_sources
from emovox.data.examples import Skipped
from emovox.evaluation.metrics import aggregate
from emovox.evaluation.predictions import write_predictions
from emovox.version import __version__

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.splits.fold import Fold
    from emovox.training.folds import FoldOutcome

RESULTS_SCHEMA = 1


def environment_record(cfg: ExperimentConfig, corpus: Corpus) -> dict:
    import transformers

    from emovox.accel import resolve_extract_precision

    return {
        "emovox": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "corpus": cfg.corpus,
        "corpus_fingerprint": corpus.fingerprint(),
        "corpora": {s["name"]: s["fingerprint"] for s in corpus_sources(corpus)},
        "utterances": len(corpus),
        "protocol": cfg.protocol,
        "validation": cfg.validation,
        "seed": cfg.train.seed,
        "extract_precision": resolve_extract_precision(cfg.train.extract_precision),
    }


def model_summary(cfg: ExperimentConfig) -> dict:
    """The model part of results.json: kind, and the backbone(s) and mode(s) in a line each."""
    m = json.loads(cfg.model.model_dump_json())
    branches = m.get("branches") or ([m] if "backbone" in m else [])
    if m.get("members"):  # late fusion: the members' folders, frozen
        return {"kind": m["kind"], "backbone": " + ".join(Path(x).name for x in m["members"]), "mode": "frozen members"}
    return {
        "kind": m["kind"],
        "backbone": " + ".join(b["backbone"] for b in branches) if branches else None,
        "mode": " + ".join(b.get("mode", "") for b in branches) if branches else None,
    }


def write_results(
    cfg: ExperimentConfig,
    corpus: Corpus,
    folds: list[Fold],
    outcomes: list[FoldOutcome],
    skipped: list[Skipped],
    out_dir: Path,
    *,
    seconds: float,
    prep_seconds: float,
    baseline: dict | None = None,
    missing: Sequence[str] = (),
    baseline_outcomes: Sequence[FoldOutcome] | None = None,
    control: dict | None = None,
) -> dict:
    from emovox.evaluation import reporting
    from emovox.training import breakdown

    labels = corpus.labels
    pooled_true = [t for o in outcomes for t in o.y_true]
    pooled_pred = [int(p) for o in outcomes for p in o.probs.argmax(1)]
    result = aggregate(
        [o.metrics for o in outcomes],
        pooled_true,
        pooled_pred,
        labels,
        fold_names=[o.fold.name for o in outcomes],
        protocol=cfg.protocol,
        speaker_independent=all(f.speaker_independent for f in folds),
    )
    from emovox.evaluation.stats import add_confidence_intervals

    payload = result.to_dict()
    payload["label_set"] = list(labels)
    speaker_independent = all(f.speaker_independent for f in folds)
    speakers = [corpus[uid].speaker for o in outcomes for uid in o.ids] if speaker_independent else None
    add_confidence_intervals(payload, pooled_true, pooled_pred, speakers=speakers, seed=cfg.train.seed)
    payload.update(
        {
            "schema": RESULTS_SCHEMA,
            "name": cfg.name,
            "corpus": cfg.corpus,
            "validation": cfg.validation,
            "label_set": list(labels),
            **model_summary(cfg),
            "seconds": round(seconds, 2),
            "feature_seconds": round(prep_seconds, 2),
            "fold_seconds": [round(o.seconds, 2) for o in outcomes],
            "best_epochs": [o.best_epoch for o in outcomes],
            "choices": [o.choices for o in outcomes],
            "temperatures": [o.calibration.get("temperature") for o in outcomes],
            "skipped": [s.to_dict() for s in skipped],
            "baseline": baseline,
            "control": control,
            "missing": list(missing),
            "corpora": corpus_sources(corpus),
            "label_policy": cfg.labels.model_dump() if cfg.labels is not None else None,
            "per_corpus": breakdown.per_corpus(outcomes, corpus),
            "folds_absent_classes": breakdown.folds_with_absent_classes(outcomes, labels),
            "environment": environment_record(cfg, corpus),
        }
    )
    several = len(corpus.corpora) > 1
    cells = breakdown.matrix_cells(outcomes, corpus, baseline_outcomes) if several else []
    if several:
        payload["corpus_matrix"] = cells
    reporting.write_report(
        result, out_dir, title=cfg.name, history=[o.history for o in outcomes], curve_names=[o.fold.curve_name for o in outcomes]
    )
    report = out_dir / "report.md"
    sections = [
        missing_markdown(missing),
        report.read_text(encoding="utf-8").rstrip("\n"),
        reporting.ci_markdown(payload["confidence_intervals"]),
        baseline_markdown(payload),
        breakdown.per_corpus_markdown(payload),
        breakdown.matrix_markdown(cells),
        control_markdown(payload),
        skipped_markdown(skipped, cfg),
    ]
    atomic_write_text(report, "\n\n".join(x for x in sections if x))
    if several:
        per = payload["per_corpus"]
        base = (baseline or {}).get("per_corpus") or {}
        keys = ("n", "ua", "wa", "macro_f1", "weighted_f1", "ece", "chance_ua")
        atomic_write_text(
            out_dir / "per_corpus.csv",
            reporting.csv_text(
                ["corpus", *keys, "classes_present", "absent_classes", "baseline_ua"],
                [[name, *(r[k] for k in keys), " ".join(r["classes_present"]), " ".join(r["absent_classes"]),
                  base.get(name, {}).get("ua")] for name, r in per.items()],
            ),
        )  # fmt: skip
        matrix_csv = reporting.csv_text(breakdown.MATRIX_COLUMNS, breakdown.matrix_csv_rows(cells))
        atomic_write_text(out_dir / "corpus_matrix.csv", matrix_csv)
        reporting.plot_corpus_matrix(cells, out_dir / "corpus_matrix.png", f"{cfg.name}: UA, trained on -> tested on")
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    atomic_write_json(out_dir / "results.json", payload)  # a superset of the report's results.json
    rows = [(uid, o.fold.name, t, p) for o in outcomes for uid, t, p in zip(o.ids, o.y_true, o.probs, strict=True)]
    write_predictions(out_dir / "predictions.csv", rows, labels)
    return payload


def missing_markdown(missing: Sequence[str]) -> str:
    """A warning atop the report of an incomplete run (``emovox cv --collect`` before every fold job finished)."""
    if not missing:
        return ""
    return (
        f"> **INCOMPLETE**: {len(missing)} part(s) of this run are not finished and are not in these numbers: "
        f"{', '.join(missing)}. Run them (`emovox cv CONFIG --fold K`) and collect again (`emovox cv CONFIG --collect`)."
    )


def skipped_markdown(skipped: Sequence[Skipped], cfg: ExperimentConfig) -> str:
    """The report's "Skipped utterances" section: every utterance left out, with its reason."""
    lines = ["## Skipped utterances", ""]
    policy = f"`on_bad_audio: {cfg.on_bad_audio}`, `on_missing_class: {cfg.on_missing_class}`"
    if not skipped:
        return "\n".join(lines + [f"None: every utterance of the corpus was used ({policy}).", ""])
    counts: dict[str, int] = {}
    for x in skipped:
        counts[x.kind] = counts.get(x.kind, 0) + 1
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))
    lines += [f"{len(skipped)} utterance(s) were left out ({summary}; policy {policy}):", ""]
    lines += ["| id | fold | kind | reason |", "|---|---|---|---|"]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for x in skipped:
        lines.append(f"| {cell(x.id)} | {cell(x.fold or 'all')} | {x.kind} | {cell(x.reason)} |")
    return "\n".join(lines) + "\n"


def control_markdown(payload: dict) -> str:
    """The report's "Text-only control" section: what the transcripts alone score on the same folds."""
    c = (payload.get("control") or {}).get("text")
    if not c:
        return ""
    lines = [
        "## Text-only control",
        "",
        f"{c['description']}; same folds. Transcripts: {c['transcripts']}. A control far above chance means the words "
        "give the label away, so the audio figure beside it is no evidence of hearing emotion.",
        "",
        "| corpus | n | audio UA (%) | text-only UA (%) | chance UA (%) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| all (pooled) | {payload['pooled']['n']} | {100 * payload['pooled']['ua']:.2f} | {100 * c['pooled']['ua']:.2f} | "
        f"{100 / len([x for x in payload['pooled']['per_class'].values() if x['support']]):.2f} |",
    ]
    per = payload.get("per_corpus") or {}
    if len(per) > 1:
        for name, r in per.items():
            t = c["per_corpus"].get(name)
            if t:
                lines.append(f"| {name} | {r['n']} | {100 * r['ua']:.2f} | {100 * t['ua']:.2f} | {100 * r['chance_ua']:.2f} |")
    return "\n".join(lines) + "\n"


def baseline_markdown(payload: dict) -> str:
    """The report's "Against the standard baseline" section: the recipe and the baseline, same folds."""
    b = payload.get("baseline")
    if not b:
        return ""
    rows = []
    for name, r in ((payload["name"], payload), ("baseline", b)):
        rows.append(
            f"| {name} | {100 * r['pooled']['ua']:.2f} | {100 * r['pooled']['wa']:.2f} | "
            f"{100 * r['mean']['ua']:.2f} ± {100 * r['std']['ua']:.2f} | {100 * r['mean']['macro_f1']:.2f} |"
        )
    diff = 100 * (payload["pooled"]["ua"] - b["pooled"]["ua"])
    return "\n".join(
        [
            "## Against the standard baseline",
            "",
            f"Baseline: {b['description']}; same folds. The recipe is {abs(diff):.2f} points "
            f"{'above' if diff >= 0 else 'BELOW'} it on pooled UA.",
            "",
            "| model | pooled UA (%) | pooled WA (%) | UA mean ± std (%) | macro-F1 mean (%) |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
            "",
        ]
    )

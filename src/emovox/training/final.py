"""One recognizer on all the data (``emovox train``), and scoring a recognizer on a corpus (``emovox evaluate``).

The final model trains on the whole corpus less a held-out speaker group that picks the epoch
(as the strict protocol does), and is saved as a self-contained recognizer directory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emovox.accel import set_threads
from emovox.config import ExperimentConfig
from emovox.corpora.base import Corpus
from emovox.corpora.pool import corpus_sources
from emovox.data.examples import build_examples
from emovox.errors import EmovoxError
from emovox.evaluation.metrics import compute_metrics
from emovox.models.directory import OWNED
from emovox.training.data import ExperimentData
from emovox.training.folds import fit_model
from emovox.training.runner import corpus_dropped
from emovox.training.tracking import open_tracker
from emovox.training.trainer import Trainer
from emovox.version import __version__


@dataclass(frozen=True)
class TrainedRecognizer:
    """What ``train_recognizer`` saved: the directory, and the model, labels and record it holds
    (load it for predictions with ``emovox.Recognizer.load(directory)``)."""

    directory: Path
    model: Any
    labels: tuple[str, ...]
    info: dict


def holdout_speakers(corpus: Corpus, seed: int, fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Training and early-stopping ids for a final model: whole speakers held out when possible.

    About ``fraction`` of the speakers (at least one) are held out, chosen with ``seed``, so the
    stopping epoch is picked on voices the model has not heard, as in the strict protocol.
    With fewer than three speakers a seeded ``fraction`` of utterances is held out instead.
    """
    import random

    speakers = sorted(corpus.speakers)
    if len(speakers) >= 3:
        k = max(1, round(fraction * len(speakers)))
        held = set(random.Random(seed).sample(speakers, k))
        train = [u.id for u in corpus if u.speaker not in held]
        valid = [u.id for u in corpus if u.speaker in held]
        return train, valid
    from emovox.splits.protocols import seeded_split

    rest, held_ids = seeded_split(corpus, [u.id for u in corpus], fraction, seed, "train", what="valid")
    return list(rest), list(held_ids)


#: What a recognizer directory holds (``emovox.json`` last: its presence means a complete recognizer),
#: and the work folder of an unfinished ``train_recognizer``.
RECOGNIZER_ENTRIES = ("emovox.json", *OWNED, "_training")


def prepare_model_dir(model_dir: Path, *, force: bool) -> None:
    """Refuse to train into a folder that holds another recognizer or anything else, unless ``force``.

    Like ``prepare_run_dir``: nothing that is not ours is ever deleted. ``force`` replaces an
    existing recognizer (its files are deleted now, before training) and writes into a non-empty
    unrelated folder without touching its other files. A folder holding only ``_training`` is a
    ``train`` that was interrupted: it is continued.
    """
    if model_dir.exists() and not model_dir.is_dir():
        raise EmovoxError(f"--out {model_dir}: exists and is not a directory; choose another recognizer directory")
    if not model_dir.is_dir():
        return
    if (model_dir / "emovox.json").is_file():
        if not force:
            raise EmovoxError(
                f"--out {model_dir} already holds a recognizer; pass --force to replace it, or choose another --out"
            )
        for name in (*RECOGNIZER_ENTRIES, "head.safetensors", "backbone"):  # today's and emovox 0.1's layout
            if (model_dir / name).is_dir():
                shutil.rmtree(model_dir / name)
            else:
                (model_dir / name).unlink(missing_ok=True)
        return
    others = sorted(p.name for p in model_dir.iterdir() if p.name != "_training")
    if others and not force:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise EmovoxError(
            f"--out {model_dir} is not empty ({shown}) and holds no recognizer; choose a new or empty folder, "
            "or pass --force to write the recognizer into it (nothing in it is deleted)"
        )


def train_recognizer(
    cfg: ExperimentConfig,
    model_dir: Path,
    *,
    progress: bool = True,
    corpus: Corpus | None = None,
    cv_results: Path | Sequence[Path] | None = None,
    force: bool = False,
    runtime: bool = True,
    runs_dir: Path | None = None,
):
    """Train on the whole corpus (less a held-out speaker group for early stopping) and save a
    self-contained recognizer directory (refusing to overwrite one unless ``force``).

    ``runtime``: also write what inference needs without torch (``emovox.inference.export.write_runtime``) when the
    recognizer is one a runtime covers; ``info["runtime"]`` then says so, or why there is none.

    The model card quotes the cv runs in ``cv_results`` (run directories or their results.json), or,
    when none is given, the finished runs of this recipe found under ``runs_dir`` (``find_cv_runs``):
    a cross-validation's figures, and a leave-one-corpus-out or cross-corpus run's per held-out corpus."""
    from emovox.models import directory as recognizer_dir

    set_threads(cfg.train.threads)
    model_dir = Path(model_dir)
    prepare_model_dir(model_dir, force=force)
    corpus = corpus if corpus is not None else cfg.open_corpus()
    train_ids, valid_ids = holdout_speakers(corpus, cfg.train.seed)
    from emovox.training import distributed

    with distributed.main_process_first():
        data = ExperimentData(cfg, corpus, progress=progress and distributed.is_main())
    train, valid = data.select(train_ids), data.select(valid_ids)
    labels = corpus.labels
    missing = sorted({*labels} - {labels[e.target] for e in train})
    if missing:
        raise EmovoxError(
            f"{' + '.join(cfg.corpus_specs)}: classes {missing} have no training utterances; remove them from the label set"
        )
    model = data.build_model()
    model.use_fold(None, corpus)
    work = model_dir / "_training"
    # train.report_to: TensorBoard in MODEL_DIR/tensorboard/all_data (kept with the recognizer, as model hubs
    # show it), MLflow's default store in MODEL_DIR/mlflow.db (not part of the recognizer's files)
    tracker = open_tracker(cfg, run_root=model_dir, name="all_data", state_dir=work, nested=False)
    trainer = Trainer(
        model, None, cfg.train, len(labels), run_dir=work, progress=progress, description="all data", tracker=tracker
    )
    try:
        fit = fit_model(model, trainer, train, valid)
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close()
    info = {
        "name": cfg.name,
        "emovox_version": __version__,
        "training": {
            "corpus": cfg.corpus,
            "corpus_fingerprint": corpus.fingerprint(),
            "corpora": corpus_sources(corpus),
            "label_policy": cfg.labels.model_dump() if cfg.labels is not None else None,
            "train_utterances": len(train),
            "valid_utterances": len(valid),
            "validation": "held-out speakers" if len(corpus.speakers) >= 3 else "held-out utterances",
            "best_epoch": fit.best_epoch,
            "best_valid_ua": fit.best_valid_ua,
            "select_on": cfg.train.select_on,
            "best_valid_score": fit.best_valid_score if fit.history else fit.best_valid_ua,
            "history": fit.history,
            "choices": fit.choices,
            "calibration": fit.calibration,
            "config": json.loads(cfg.model_dump_json()),
            "skipped": [s.to_dict() for s in corpus_dropped(corpus) + list(data.skipped)],
        },
    }
    given = [cv_results] if isinstance(cv_results, (str, Path)) else list(cv_results or [])
    results = [Path(p) / "results.json" if Path(p).is_dir() else Path(p) for p in given]
    missing_files = [str(p) for p in results if not p.is_file()]
    if missing_files:
        raise EmovoxError(
            f"--cv-results {', '.join(missing_files)}: no such results.json (give a cv run directory or its results.json)"
        )
    if not given and runs_dir is not None:
        results = find_cv_runs(cfg, corpus, Path(runs_dir))
    for path in results:
        r = json.loads(path.read_text())
        record = evaluation_record(r, path)
        if corpus_protocol(r["protocol"]):  # leave-one-corpus-out, cross-corpus: figures per held-out corpus
            info["training"].setdefault("corpus_evaluations", []).append(record)
        elif "cross_validation" not in info:
            info["cross_validation"] = record
    info["training"]["evaluations_found"] = [str(p) for p in results] if not given else []
    from emovox.training import distributed

    if distributed.is_main():  # several processes trained one model: one of them saves it
        recognizer_dir.save(model_dir, model.eval(), labels, info)
        shutil.rmtree(work, ignore_errors=True)
        if runtime:
            info = add_runtime(model, model_dir, progress=progress) or info
    distributed.barrier()
    return TrainedRecognizer(model_dir, model, tuple(labels), info)


def add_runtime(model, model_dir: Path, *, progress: bool = True) -> dict | None:
    """Write the recognizer's runtime when one covers it; the updated record, or None when it has none.

    A recognizer a runtime does not cover (text, fusion, ...) is left as it is; an export that fails its
    check is reported as a warning and the recognizer is kept: it still runs with torch.
    """
    import warnings

    from emovox.errors import EmovoxWarning
    from emovox.inference.export import ExportError, unsupported, write_runtime

    if unsupported(model) is not None:
        return None
    from emovox.progress import progress_bar

    stages = ("export", "check")
    with progress_bar(total=len(stages), desc="runtime", unit="step", disable=not progress) as bar:
        def on_stage(name: str) -> None:
            bar.set_postfix_str(name)
            if name != stages[0]:
                bar.update(1)

        try:
            write_runtime(model, model_dir, on_stage=on_stage)
        except ExportError as exc:
            warnings.warn(f"{model_dir}: no runtime written ({exc}); the recognizer runs with torch", EmovoxWarning,
                          stacklevel=2)
            return None
        bar.update(1)
    return json.loads((Path(model_dir) / "emovox.json").read_text(encoding="utf-8"))


def corpus_protocol(protocol: str) -> bool:
    """True for the protocols that test on corpora never trained on."""
    return protocol.startswith(("leave-one-corpus-out", "cross-corpus"))


def evaluation_record(r: dict, path: Path) -> dict:
    """What a recognizer's ``emovox.json`` keeps of a cv run's ``results.json``: its headline figures, and per
    corpus where it ran over several (with the baseline's on the same folds)."""
    record = {
        "results": str(path),
        "protocol": r["protocol"],
        "folds": len(r["folds"]),
        "mean": r["mean"],
        "std": r["std"],
        "pooled": {k: r["pooled"][k] for k in ("wa", "ua", "macro_f1", "weighted_f1") if k in r["pooled"]},
    }
    ci = (r.get("confidence_intervals") or {}).get("utterance")
    if ci:  # the model card shows them
        record["ci"] = {k: [v["low"], v["high"]] for k, v in ci.items() if isinstance(v, dict)}
        record["ci_level"] = r["confidence_intervals"]["level"]
    per = r.get("per_corpus") or {}
    if len(per) > 1:
        base = (r.get("baseline") or {}).get("per_corpus") or {}
        keep = ("n", "ua", "wa", "macro_f1", "ece", "chance_ua", "classes_present", "absent_classes")
        record["per_corpus"] = {
            name: {**{k: x[k] for k in keep}, "baseline_ua": (base.get(name) or {}).get("ua")} for name, x in per.items()
        }
        record["corpus_matrix"] = [
            {k: c[k] for k in ("train", "test", "ua", "shared_labels", "chance_ua")} for c in r.get("corpus_matrix") or []
        ]
    return record


def find_cv_runs(cfg: ExperimentConfig, corpus: Corpus, runs_dir: Path) -> list[Path]:
    """Finished cv runs under ``runs_dir`` of this recognizer's recipe: the same corpus (fingerprint: corpora,
    labels, ids) and the same model section, every fold of their protocol, whatever the protocol; corpus
    protocols first. Of several runs of one protocol (a rerun, a cold-cache timing run) the newest finished one is
    quoted: a card holds one section per protocol (``--cv-results`` names others)."""
    want = json.loads(cfg.model.model_dump_json())
    found = []
    for path in sorted(Path(runs_dir).glob("*/results.json")):
        try:
            record = json.loads((path.parent / "run.json").read_text())
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        config = record.get("config") or {}
        if (
            record.get("corpus_fingerprint") == corpus.fingerprint()
            and config.get("model") == want
            and config.get("folds") is None  # every fold of its protocol, not a smoke test of one
            and not r.get("missing")
        ):
            found.append((r.get("protocol", ""), path.stat().st_mtime, path))
    newest: dict[str, tuple[float, Path]] = {}
    for protocol, mtime, path in found:
        if protocol not in newest or mtime > newest[protocol][0]:
            newest[protocol] = (mtime, path)
    kept = sorted((path, protocol) for protocol, (_, path) in newest.items())
    return [path for path, protocol in sorted(kept, key=lambda pp: not corpus_protocol(pp[1]))]


@dataclass(frozen=True)
class Evaluation:
    """A recognizer scored on a corpus.

    ``metrics`` scores the recognizer's own answers (any of its labels). When the corpus has only some of
    the recognizer's labels (another corpus), ``restricted`` scores the same clips with the answers
    restricted to the labels the corpus has (the probabilities of the others dropped, the rest
    renormalised): the figure comparable with a classifier trained on those labels alone.
    ``left_out`` counts the utterances whose label the recognizer does not know (``labels="shared"``).
    """

    metrics: Any
    examples: list
    probs: Any
    skipped: list
    restricted: Any = None
    answer_labels: tuple[str, ...] = ()
    left_out: dict[str, int] | None = None


def evaluate_recognizer(
    recognizer, corpus: Corpus, *, on_bad_audio: str = "skip", progress: bool = True, labels: str = "all"
) -> Evaluation:
    """Score a trained recognizer on a corpus.

    ``labels="all"``: every label of the corpus must be known to the recognizer (a clear error otherwise).
    ``labels="shared"``: the utterances of labels the recognizer does not know are left out and counted
    (a corpus the recognizer was not trained on: RAVDESS's calm and surprised for an EmoDB recognizer).
    Unusable utterances are left out and returned (``on_bad_audio="skip"``), or raise (``"error"``).
    """
    from collections import Counter

    import numpy as np

    from emovox.errors import RecognizerError

    if labels not in ("all", "shared"):
        raise EmovoxError(f"labels={labels!r}: use all or shared")
    name = corpus.spec or corpus.name
    known = set(recognizer.labels)
    unknown = Counter(u.label for u in corpus if u.label not in known)
    if unknown and labels == "all":
        raise RecognizerError(
            f"{name}: labels {sorted(unknown)} are not among the recognizer's {list(recognizer.labels)} "
            "(--labels shared scores the utterances of the labels both have)"
        )
    ids = [u.id for u in corpus if u.label in known]
    if not ids:
        raise RecognizerError(f"{name}: none of its labels {sorted(unknown)} is among the recognizer's {list(recognizer.labels)}")
    examples, skipped = build_examples(
        corpus, ids, recognizer.model.fields(), max_seconds=recognizer.max_seconds, on_error=on_bad_audio,
        context=recognizer.model.context_format(),
    )
    probs = recognizer.predict_examples(examples, progress=progress, desc="evaluate")
    index = {label: i for i, label in enumerate(recognizer.labels)}
    y_true = [index[corpus[e.id].label] for e in examples]
    metrics = compute_metrics(y_true, probs.argmax(1).tolist(), recognizer.labels)
    has = {u.label for u in corpus}
    answer = tuple(label for label in recognizer.labels if label in has)
    restricted = None
    if len(answer) < len(recognizer.labels):
        keep = np.array([index[label] for label in answer])
        pred = keep[probs[:, keep].argmax(1)]  # argmax of the renormalised probabilities over the labels kept
        restricted = compute_metrics(y_true, pred.tolist(), recognizer.labels)
    return Evaluation(metrics, examples, probs, skipped, restricted, answer, dict(sorted(unknown.items())) or None)

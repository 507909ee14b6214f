"""The text-only control: what the words alone score on the run's own folds.

An audio figure is evidence that a model hears emotion only if the words cannot give the label away.
On EmoDB and RAVDESS every sentence is read in every emotion, so they cannot; on ASED's full set
sentences 03-07 are each written for one emotion, so a model that recognises the words scores
highly without hearing any emotion. This control catches that with a number instead of a footnote:
``control: text`` (or ``control: {text: true, asr: ..., transcripts: ...}``) fits a
language-agnostic text classifier on each fold's training and validation parts and tests it on
the fold's test part, and the report puts its UA beside the recipe's.

- **Transcripts** (``control.transcripts``): ``auto`` takes the corpus's own where it has them
  (EmoDB's and RAVDESS's sentences, a manifest's ``text``) and asks the ASR (``control.asr``, a
  Whisper model, ``emovox.inference.asr``) for the others; ``asr`` transcribes every clip (the words a
  recognizer could read from the audio, mis-hearings included); ``given`` uses the corpus's only.
  ASR transcripts are cached on disk beside the feature cache (``<cache>/../transcripts``), keyed
  by the ASR model, its language and the audio content, so a clip is transcribed once for every run.
  The run writes them to ``control_text/transcripts.csv`` for anyone to read.
- **Classifier**: TF-IDF of character 1-4-grams within word boundaries (any script, no tokenizer,
  no language model: it knows only the training transcripts) and a multinomial logistic regression
  (C = 1, class-balanced), fixed in advance: nothing is chosen, so nothing can be chosen on the test fold.

Folds are written like any run's (``control_text/fold_k/predictions.csv`` and ``done.json``) and a
finished one is never refitted; ``emovox cv --collect`` reads them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emovox.atomic import atomic_write_json, atomic_write_text
from emovox.corpora.base import Corpus
from emovox.errors import ConfigError, EmovoxError
from emovox.evaluation.metrics import aggregate, compute_metrics
from emovox.evaluation.predictions import read_predictions, write_predictions

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.splits.fold import Fold

DESCRIPTION = (
    "text-only control: character 1-4-gram TF-IDF (within word boundaries) + logistic regression (C = 1, "
    "class-balanced) on the transcripts alone, fitted on each fold's training and validation parts"
)
NGRAMS = (1, 4)
C = 1.0
#: Tokens an ASR transcript may have (about 30 s of speech): on a language the ASR hardly knows (Whisper-base on
#: Amharic) it can loop on a phrase up to its 448-token limit, and each batch waits for its longest transcript.
ASR_MAX_TOKENS = 96


def transcript_dir(cfg: ExperimentConfig) -> Path:
    """Where ASR transcripts are cached: ``transcripts/`` beside the feature cache."""
    from emovox.cache import default_cache_dir

    features = cfg.cache_dir or default_cache_dir()
    return Path(features).parent / "transcripts"


def check_control(cfg: ExperimentConfig, corpus: Corpus) -> None:
    """Refuse, before any fold trains, a text control that could not get its transcripts."""
    control = cfg.control
    if control is None or not control.text:
        return
    lacking = [u for u in corpus if not (u.text and u.text.strip())] if control.transcripts != "asr" else list(corpus)
    if lacking and control.transcripts == "given":
        raise ConfigError(
            f"control.transcripts: given, but {len(lacking)} utterance(s) have no transcript (e.g. {lacking[0].id}); use "
            "transcripts: auto with control.asr (a Whisper model) to transcribe the clips without one"
        )
    if lacking and not control.asr:
        raise ConfigError(
            f"control: text needs transcripts, and {len(lacking)} utterance(s) have none (e.g. {lacking[0].id}); set "
            "control.asr to a Whisper model (a directory such as ../shared/models/whisper-base, or a hub id)"
        )


def transcripts(cfg: ExperimentConfig, corpus: Corpus, *, progress: bool = True) -> dict[str, tuple[str, str]]:
    """``id -> (transcript, source)`` for every utterance (source ``given`` or ``asr``); utterances whose audio
    cannot be read for the ASR are left out."""
    control = cfg.control
    assert control is not None
    out: dict[str, tuple[str, str]] = {}
    todo = []
    for u in corpus:
        given = u.text.strip() if u.text else ""
        if control.transcripts != "asr" and given:
            out[u.id] = (given, "given")
        else:
            todo.append(u)
    if todo:
        check_control(cfg, corpus)
        for uid, text in asr_transcripts(cfg, todo, progress=progress).items():
            out[uid] = (text, "asr")
    return out


def asr_transcripts(cfg: ExperimentConfig, utterances: Sequence, *, progress: bool = True) -> dict[str, str]:
    """Whisper transcripts of ``utterances`` (cached by ASR model, language and audio content)."""
    from emovox.cache import cache_key, item_key, weights_fingerprint
    from emovox.data.examples import load_cropped_audio
    from emovox.inference.asr import AsrConfig, get_transcriber
    from emovox.progress import progress_bar

    control = cfg.control
    asr = AsrConfig(control.asr, control.asr_language)
    folder = transcript_dir(cfg) / cache_key(Path(asr.model).name or "asr", {
        "asr": weights_fingerprint(asr.model), "language": asr.language, "decoding": "greedy",
        "max_new_tokens": ASR_MAX_TOKENS})  # fmt: skip
    out: dict[str, str] = {}
    pending: list[tuple[str, np.ndarray, Path]] = []
    transcriber = None

    def flush() -> None:
        nonlocal transcriber
        if not pending:
            return
        transcriber = transcriber or get_transcriber(asr)
        texts = transcriber.transcribe([a for _, a, _ in pending], max_new_tokens=ASR_MAX_TOKENS)
        for (uid, _, path), text in zip(pending, texts, strict=True):
            out[uid] = text
            atomic_write_text(path, json.dumps({"text": text}, ensure_ascii=False))
        pending.clear()

    bar = progress_bar(total=len(utterances), desc="transcripts (ASR)", unit="utt", disable=not progress)
    for u in utterances:
        try:
            audio = load_cropped_audio(u, 30.0)
        except EmovoxError:
            bar.update(1)
            continue  # unusable audio: the run lists it; the control cannot transcribe it either
        key = item_key(audio)
        path = folder / key[:2] / f"{key}.json"
        try:
            out[u.id] = json.loads(path.read_text(encoding="utf-8"))["text"]
        except (OSError, ValueError, KeyError, TypeError):
            pending.append((u.id, audio, path))
            if len(pending) >= asr.batch_size:
                flush()
        bar.update(1)
    flush()
    bar.close()
    return out


def _classifier():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAMS, lowercase=True, sublinear_tf=True, min_df=1),
        LogisticRegression(C=C, class_weight="balanced", max_iter=2000),
    )


#: The control's settings, beside its folds: folds of other settings are refitted, never mixed in.
SETTINGS_FILE = "control.json"


def _settings(cfg: ExperimentConfig) -> dict:
    return {**cfg.control.model_dump(), "classifier": DESCRIPTION}


def _same_settings(cfg: ExperimentConfig, out_dir: Path) -> bool:
    try:
        return json.loads((out_dir / SETTINGS_FILE).read_text()) == _settings(cfg)
    except (OSError, ValueError):
        return False


def train_text_control(cfg: ExperimentConfig, corpus: Corpus, folds: Sequence[Fold], out_dir: Path, *, progress: bool = True):
    """Fit and test the text-only control on ``folds`` (finished folds of the same settings are kept) and write its
    transcripts."""
    if out_dir.is_dir() and not _same_settings(cfg, out_dir):  # another transcript source or ASR: start over
        for done in out_dir.glob("fold_*/done.json"):
            done.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / SETTINGS_FILE, _settings(cfg))
    todo = [f for f in folds if not (out_dir / f"fold_{f.index}" / "done.json").is_file()]
    if not todo:
        return
    texts = transcripts(cfg, corpus, progress=progress)
    from emovox.evaluation.reporting import csv_text

    atomic_write_text(out_dir / "transcripts.csv", csv_text(
        ["id", "source", "text"], [[u.id, *reversed(texts[u.id])] for u in corpus if u.id in texts]))  # fmt: skip
    labels = corpus.labels
    index = {label: i for i, label in enumerate(labels)}
    for fold in todo:
        learn = [i for i in (*fold.train, *(fold.valid if fold.validation == "strict" else ())) if i in texts]
        test = [i for i in fold.test if i in texts]
        if not learn or not test:
            raise EmovoxError(f"text control, fold {fold.index} ({fold.name}): no transcribed utterance to fit or test")
        y = [index[corpus[i].label] for i in learn]
        if len(set(y)) < 2:
            raise EmovoxError(f"text control, fold {fold.index} ({fold.name}): its training part has one class only")
        model = _classifier().fit([texts[i][0] for i in learn], y)
        probs = np.zeros((len(test), len(labels)))
        probs[:, model.classes_] = model.predict_proba([texts[i][0] for i in test])
        fold_dir = out_dir / f"fold_{fold.index}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        rows = [(i, fold.name, index[corpus[i].label], p) for i, p in zip(test, probs, strict=True)]
        write_predictions(fold_dir / "predictions.csv", rows, labels)
        atomic_write_json(fold_dir / "done.json", {"fold": fold.index, "name": fold.name, "trained_on": len(learn)})


def read_text_control(
    cfg: ExperimentConfig, corpus: Corpus, folds: Sequence[Fold], out_dir: Path
) -> tuple[dict | None, list[Fold]]:
    """The control's part of results.json over ``folds`` (None unless every one is finished), and the unfinished folds."""
    from emovox.training.breakdown import per_corpus
    from emovox.training.folds import FoldOutcome

    outcomes, missing = [], []
    same = _same_settings(cfg, out_dir)
    for fold in folds:
        fold_dir = out_dir / f"fold_{fold.index}"
        if not same or not (fold_dir / "done.json").is_file():
            missing.append(fold)
            continue
        ids, y, probs = read_predictions(fold_dir / "predictions.csv", corpus.labels)
        metrics = compute_metrics(y, probs.argmax(1).tolist(), corpus.labels)
        outcomes.append(FoldOutcome(fold, ids, y, probs, [], 0.0, metrics))
    if missing or not outcomes:
        return None, missing
    result = aggregate(
        [o.metrics for o in outcomes], [t for o in outcomes for t in o.y_true],
        [int(p) for o in outcomes for p in o.probs.argmax(1)], corpus.labels, fold_names=[o.fold.name for o in outcomes],
    )  # fmt: skip
    sources = {}
    path = out_dir / "transcripts.csv"
    if path.is_file():
        import csv

        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                sources[row["source"]] = sources.get(row["source"], 0) + 1
    control = cfg.control
    how = ", ".join(f"{n} {s}" for s, n in sorted(sources.items())) or "?"
    if sources.get("asr"):
        how += f" (ASR {os.path.basename(str(control.asr).rstrip('/'))}, language {control.asr_language or 'detected'})"
    return {
        "text": {
            "description": DESCRIPTION,
            "transcripts": how,
            "mean": result.mean.to_dict(),
            "std": result.std.to_dict(),
            "pooled": {k: v for k, v in result.pooled.to_dict().items() if k not in ("confusion_normalized",)},
            "folds": [o.metrics.scores.to_dict() for o in outcomes],
            "per_corpus": per_corpus(outcomes, corpus),
            "directory": str(out_dir),
        }
    }, []

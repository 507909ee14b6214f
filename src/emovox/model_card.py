"""The README.md of a recognizer directory: a model card a model hub reads as it is.

A recognizer directory is meant to be uploaded unchanged (``hf upload USER/NAME MODEL_DIR .``),
so its card carries the hub's YAML front matter, written by ``huggingface_hub``'s own
``ModelCardData`` (not hand-made YAML): ``library_name``, ``pipeline_tag``, ``tags``,
``language``, ``datasets``, ``base_model`` and a ``model-index`` whose results name the
evaluation protocol, so that a hub page shows the figures with the way they were measured.

Only what the training run recorded is stated. A recognizer trained without ``--cv-results``
has no test score: its validation UA chose the epoch and is labelled as such, never as a
result. Confidence intervals are shown when the cross-validation record holds them
(``ci``: metric -> [low, high], with an optional ``ci_level``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Language of the speech (and transcripts) in each corpus format emovox reads (ISO 639-1).
CORPUS_LANGUAGES = {"emodb": "de", "iemocap": "en", "ravdess": "en", "meacorpus": "es", "meld": "en", "ased": "am"}
CORPUS_NAMES = {
    "emodb": "EmoDB", "iemocap": "IEMOCAP", "ravdess": "RAVDESS", "meacorpus": "MEACorpus", "meld": "MELD", "ased": "ASED",
}  # fmt: skip
#: emovox's metric names -> (hub metric id, name shown on the hub)
METRICS = {"wa": ("accuracy", "WA (accuracy)"), "ua": ("recall", "UA (macro recall)"), "macro_f1": ("f1", "macro-F1")}


def model_card(info: dict, labels: Sequence[str], *, directory: str | Path | None = None) -> str:
    """README.md of a recognizer directory from its ``emovox.json`` record.

    ``directory``, when given, is measured: the card lists the actual bytes of its weight files
    (call it after the weights are written, as ``Recognizer.save`` does).
    """
    from huggingface_hub import ModelCard

    data = card_data(info, labels)
    body = _body(info, labels, Path(directory) if directory is not None else None)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def branches(info: dict) -> list[dict]:
    """The model's branches as recorded (a classifier's config is its one branch)."""
    model = info.get("model", {})
    return model.get("branches") or ([model] if "backbone" in model else [])


def card_data(info: dict, labels: Sequence[str]):
    """The hub metadata (``huggingface_hub.ModelCardData``) of a recognizer."""
    from huggingface_hub import EvalResult, ModelCardData

    name = str(info.get("name") or "emovox-recognizer")
    modality = info.get("modality", "audio")
    pipeline = "text-classification" if modality == "text" else "audio-classification"
    formats = _corpus_formats(info)
    corpus = formats[0] if len(formats) == 1 else None
    language = list(dict.fromkeys(CORPUS_LANGUAGES[f] for f in formats if f in CORPUS_LANGUAGES))
    asr_language = (info.get("asr") or {}).get("language") if isinstance(info.get("asr"), dict) else None
    if asr_language and asr_language not in language:
        language.append(asr_language)
    datasets = _dataset_ids(info)
    dataset = datasets[0] if len(datasets) == 1 else None
    tags = ["emovox", "speech-emotion-recognition", "emotion-recognition", pipeline]
    if len(formats) > 1:
        tags.append("multi-corpus")
    for b in branches(info):  # a registry name, a hub id or a local directory: its last part, never a local path
        if b.get("backbone"):
            tags.append(_slug(Path(str(b["backbone"]).rstrip("/")).name))
    if info.get("kind"):
        tags.append(str(info["kind"]))
    results = []
    cv = info.get("cross_validation")
    if cv:
        protocol, folds = cv.get("protocol", "?"), cv.get("folds", "?")
        dataset_name = f"{CORPUS_NAMES.get(corpus, dataset or 'corpus')} ({protocol}, {folds} folds)"
        for key, (metric_id, metric_name) in METRICS.items():
            for how in ("pooled", "mean"):
                value = (cv.get(how) or {}).get(key)
                if value is None:
                    continue
                results.append(
                    EvalResult(
                        task_type=pipeline,
                        dataset_type=dataset or "custom",
                        dataset_name=dataset_name,
                        dataset_split=protocol,
                        dataset_args={"protocol": protocol, "folds": folds},
                        metric_type=metric_id,
                        metric_name=f"{metric_name}, {'pooled over all folds' if how == 'pooled' else 'mean over folds'}",
                        metric_value=round(float(value), 4),
                        metric_config=how,
                    )
                )
    for ev in (info.get("training") or {}).get("corpus_evaluations") or []:  # per held-out corpus
        for held, x in (ev.get("per_corpus") or {}).items():
            results.append(
                EvalResult(
                    task_type=pipeline, dataset_type=held, dataset_name=f"{held} (held out: {ev.get('protocol', '?')})",
                    dataset_split=ev.get("protocol", "?"), dataset_args={"protocol": ev.get("protocol", "?")},
                    metric_type="recall", metric_name="UA (macro recall) on a corpus never trained on",
                    metric_value=round(float(x["ua"]), 4), metric_config="held-out corpus",
                )
            )  # fmt: skip
    return ModelCardData(
        model_name=name,
        library_name="emovox",
        pipeline_tag=pipeline,
        tags=tags,
        language=language or None,
        datasets=datasets or None,
        metrics=[m for m, _ in METRICS.values()] if results else None,
        base_model=base_model(info),
        eval_results=results or None,
    )


def weight_files(directory: Path) -> list[tuple[str, int]]:
    """(relative path, bytes) of the recognizer's safetensors files, sorted.

    Folders whose name starts with ``_`` or ``.`` are work areas (``_training`` is still there
    while ``train`` saves), not part of the recognizer, and are left out; so is ``runtime/``, whose
    arrays are the head's own, rearranged for inference without torch (``emovox.inference.runtime.RUNTIME_DIR``,
    named here as ``models.directory.OWNED`` names it: the card is written below the inference package).
    """
    found = []
    for p in directory.rglob("*.safetensors"):
        rel = p.relative_to(directory)
        if p.is_file() and rel.parts[0] != "runtime" and not any(part.startswith(("_", ".")) for part in rel.parts[:-1]):
            found.append((rel.as_posix(), p.stat().st_size))
    return sorted(found)


def _body(info: dict, labels: Sequence[str], directory: Path | None) -> str:
    t = info.get("training", {})
    config = t.get("config", {}) if isinstance(t.get("config"), dict) else {}
    train_cfg = config.get("train", {}) if isinstance(config.get("train"), dict) else {}
    lines = [
        f"# emovox recognizer: {info.get('name', 'unnamed')}",
        "",
        f"Speech emotion recognition with emovox: {_inputs(info.get('modality'))} in, one of {len(labels)} labels out.",
        "",
        *_model_lines(info),
        f"- Labels: {', '.join(labels)}",
        f"- Trained on: {_corpus_text(t.get('corpus'))} ({t.get('train_utterances', '?')} utterances for training, "
        f"{t.get('valid_utterances', '?')} held out for early stopping: {t.get('validation', '?')})",
        f"- Corpus fingerprint: `{t.get('corpus_fingerprint', '?')}`",
        *_asr_lines(info),
        f"- emovox {info.get('emovox_version', '?')}",
        "",
        *_corpora_lines(t),
        *_label_map_lines(t, labels),
        "## Training",
        "",
    ]
    choices = t.get("choices") or {}
    if "select" in choices:  # a head fitted directly (logistic): no epochs, its choices were made by `select`
        how = {"inner-logloss": "held-out log-loss over speaker groups inside the training data",
               "valid-logloss": "log-loss on the held-out speakers", "valid-ua": "UA on the held-out speakers",
               "valid-weighted-f1": "weighted-F1 on the held-out speakers"}
        chosen = [f"C = {choices['C']:g}"] if "C" in choices else []
        chosen += [f"layers {choices['layers']}"] if "layers" in choices else []
        lines += [
            f"A logistic-regression head fitted by scikit-learn, no epochs ({', '.join(chosen) or 'fixed settings'}), chosen by "
            f"{how.get(choices['select'], choices['select'])}"
            + ("; then refitted on all the training data" if choices.get("refit") else "")
            + (f"; temperature {choices['temperature']:.3f} from held-out predictions" if "temperature" in choices else "")
            + f". Seed {train_cfg.get('seed', 0)}."
        ]
    else:
        settings = [f"{k} {train_cfg[k]}" for k in ("lr", "batch_size", "max_epochs", "patience", "seed") if k in train_cfg]
        lines += [
            f"One model on the whole corpus less the early-stopping hold-out ({t.get('validation', '?')}). "
            f"Best epoch {t.get('best_epoch', '?')}, chosen on {selection_text(t)} "
            "(a model-selection figure, not a test score)."
            + (f" Settings: {', '.join(settings)}." if settings else ""),
        ]
    skipped = t.get("skipped") or []
    if skipped:
        lines.append(f"{len(skipped)} utterance(s) could not be used and were left out (listed in `emovox.json`).")
    lines += ["", "## Evaluation", ""]
    cv = info.get("cross_validation")
    if cv:
        ci = cv.get("ci") if isinstance(cv.get("ci"), dict) else {}
        level = cv.get("ci_level", 0.95)
        header = "| metric | mean ± std over folds | pooled |" + (f" {level:.0%} CI |" if ci else "")
        lines += [
            f"Cross-validated with the same recipe: protocol `{cv.get('protocol', '?')}`, {cv.get('folds', '?')} folds "
            f"(`{cv.get('results', 'results.json')}`). *Pooled* scores all folds' test predictions together; "
            "*mean ± std* is over the per-fold scores (population std). WA = accuracy, UA = mean per-class recall, "
            "macro-F1 = unweighted mean of per-class F1.",
            "",
            header,
            "| --- | --- | --- |" + (" --- |" if ci else ""),
        ]
        for key, (_, name) in METRICS.items():
            mean, std, pooled = ((cv.get(h) or {}).get(key) for h in ("mean", "std", "pooled"))
            row = f"| {name} | {_num(mean)} ± {_num(std)} | {_num(pooled)} |"
            if ci:
                bounds = ci.get(key)
                pair = isinstance(bounds, (list, tuple)) and len(bounds) == 2
                row += f" {_num(bounds[0])} - {_num(bounds[1])} |" if pair else " - |"
            lines.append(row)
    elif t.get("corpus_evaluations"):
        lines.append("No in-corpus cross-validation is recorded here; its scores on corpora it never heard follow.")
    else:
        lines.append(
            "No cross-validated evaluation is recorded for this recognizer. Run `emovox cv CONFIG` and train with "
            "`emovox train CONFIG --cv-results RUN/results.json` to add one here."
        )
    lines.append("")
    lines += _corpus_evaluation_lines(t)
    if directory is not None:
        files = weight_files(directory)
        total = sum(size for _, size in files)
        lines += [
            "## Size on disk",
            "",
            f"Weight files (safetensors), {total:,} bytes = {total / 1e6:.1f} MB in all:",
            "",
            "| file | bytes |",
            "| --- | --: |",
            *(f"| `{name}` | {size:,} |" for name, size in files),
            "",
        ]
    reads_text = "text" in str(info.get("modality", ""))
    lines += [
        "## Use",
        "",
        "```bash",
        "emovox predict THIS_DIR clip.wav" + (' --text "the transcript"' if reads_text else ""),
        "emovox timeline THIS_DIR long_recording.wav --json timeline.json --plot timeline.png",
        "emovox demo THIS_DIR            # a page to upload or record a clip",
        "emovox serve THIS_DIR --port 8000",
        "```",
        "",
        "```python",
        "from emovox import Recognizer",
        "Recognizer.load('THIS_DIR').predict('clip.wav'" + (", text='the transcript')" if reads_text else ")"),
        "```",
        "",
    ]
    if reads_text:
        lines += [
            "This recognizer reads transcripts. Without one, audio is transcribed by the ASR model named in",
            "`emovox.json` (`asr`), or the one given with `--asr` / `Recognizer.load(..., asr=...)`.",
            "",
        ]
    lines += [
        "Upload this directory as it is with the hub's own client: `hf upload USER/NAME THIS_DIR .`",
        "",
    ]
    return "\n".join(lines)


def _inputs(modality: str | None) -> str:
    return {"text": "a transcript", "audio+text": "an audio clip and its transcript"}.get(str(modality), "an audio clip")


def _model_lines(info: dict) -> list[str]:
    lines = [f"- Model kind: `{info.get('kind', '?')}` ({info.get('modality', '?')})"]
    for b in branches(info):
        what = b.get("input", "utterance")
        tiny = " - a tiny randomly initialised build, for tests only" if b.get("tiny") else ""
        name = b.get("name") or what
        lines.append(f"- Branch `{name}`: backbone `{b.get('backbone', '?')}` reads the {what}, mode {b.get('mode', '?')}{tiny}")
    for b in (info.get("describe") or {}).get("branches") or []:  # a backbone without weights says what computes it
        if b.get("extractor"):
            lines.append(f"- Features of `{b.get('name', '?')}`: {b['extractor']}")
    for i, m in enumerate((info.get("describe") or {}).get("members") or []):  # late fusion
        branches_ = m.get("branches", [])
        names = ", ".join(f"`{Path(str(b.get('backbone', '?'))).name}` ({b.get('input', 'utterance')})" for b in branches_)
        lines.append(f"- Member {i} (`members/{i}/`, frozen): a `{m.get('kind', '?')}` recognizer on {names or '?'}")
    return lines


def _asr_lines(info: dict) -> list[str]:
    asr = info.get("asr")
    if not isinstance(asr, dict):
        return []
    language = asr.get("language") or "detected per clip"
    return [f"- ASR for clips without a transcript: `{asr.get('model')}` (language {language})"]


def _specs(info: dict) -> list[str]:
    corpus = info.get("training", {}).get("corpus") or []
    return [str(c) for c in (corpus if isinstance(corpus, list) else [corpus])]


def _corpus_formats(info: dict) -> list[str]:
    """The format of each training corpus (``emodb``, ``manifest``...), in order."""
    out = []
    for spec in _specs(info):
        fmt, sep, _ = spec.partition(":")
        if sep:
            out.append(fmt.strip().lower())
    return out


def _dataset_ids(info: dict) -> list[str]:
    """Dataset names for the hub metadata: each corpus's format, or a manifest's file name."""
    out = []
    for spec in _specs(info):
        fmt, sep, rest = spec.partition(":")
        if not sep:
            continue
        fmt = fmt.strip().lower()
        name = _slug(Path(rest.partition("?")[0]).stem) if fmt == "manifest" else fmt
        if name and name not in out:
            out.append(name)
    return out


def _corpus_text(corpus: Any) -> str:
    if isinstance(corpus, list):
        return " + ".join(f"`{c}`" for c in corpus)
    return f"`{corpus if corpus is not None else '?'}`"


def _corpora_lines(training: dict) -> list[str]:
    """The "Corpora" section of a recognizer trained on several corpora."""
    corpora = training.get("corpora") or []
    if len(corpora) < 2:
        return []
    policy = training.get("label_policy") or {}
    keep = policy.get("keep") or "shared"
    merge = policy.get("merge") or {}
    lines = [
        "## Corpora",
        "",
        f"Pooled from {len(corpora)} corpora (ids and speakers `<corpus>/<id>`), over "
        + ("the classes every corpus has" if keep == "shared" else "every class of any corpus" if keep == "all"
           else f"the classes {', '.join(keep)}")
        + (f", after merging {', '.join(f'{a} into {b}' for a, b in merge.items())}" if merge else "") + ".",
        "",
        "| corpus | language | utterances | speakers | fingerprint |",
        "| --- | --- | --: | --: | --- |",
    ]  # fmt: skip
    for c in corpora:
        fmt = str(c.get("spec", "")).partition(":")[0].strip().lower()
        lines.append(
            f"| {c.get('name', '?')} | {CORPUS_LANGUAGES.get(fmt, '?')} | {c.get('utterances', '?')} | "
            f"{c.get('speakers', '?')} | `{c.get('fingerprint', '?')}` |"
        )
    return [*lines, ""]


def _label_map_lines(training: dict, labels: Sequence[str]) -> list[str]:
    """The label map: class id -> label, and over several corpora each corpus's own codes for it."""
    corpora = training.get("corpora") or []
    if len(corpora) < 2:
        rows = [f"| {i} | {label} |" for i, label in enumerate(labels)]
        return ["## Label map", "", "| id | label |", "| --: | --- |", *rows, ""]
    names = [str(c.get("name", "?")) for c in corpora]
    lines = [
        "## Label map",
        "",
        "Each corpus's own labels (`corpus_label`) for each class; - where a corpus has none of it.",
        "",
        "| id | label | " + " | ".join(names) + " |",
        "| --: | --- |" + " --- |" * len(names),
    ]
    for i, label in enumerate(labels):
        codes = [", ".join(map(str, (c.get("label_map") or {}).get(label, []))) or "-" for c in corpora]
        lines.append(f"| {i} | {label} | " + " | ".join(codes) + " |")
    return [*lines, ""]


def _corpus_evaluation_lines(training: dict) -> list[str]:
    """Per held-out corpus figures of leave-one-corpus-out / cross-corpus runs of this recipe."""
    lines: list[str] = []
    for ev in training.get("corpus_evaluations") or []:
        per = ev.get("per_corpus") or {}
        if not per:
            continue
        title = "Leave-one-corpus-out" if str(ev.get("protocol", "")).startswith("leave-one-corpus-out") else "Cross-corpus"
        lines += [
            f"## {title}",
            "",
            f"The same recipe, protocol `{ev.get('protocol', '?')}` (`{ev.get('results', 'results.json')}`): each corpus "
            "below was tested by a model that never heard it (not this recognizer, which heard them all). UA is over "
            "the classes the corpus has; chance is a constant prediction's UA; baseline: logistic regression on the "
            "same frozen layers, same folds; ECE: expected calibration error (15 bins).",
            "",
            "| held-out corpus | utterances | classes | UA | WA | macro-F1 | chance UA | baseline UA | ECE |",
            "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
        ]
        for name, x in per.items():
            absent = f" (no {', '.join(x['absent_classes'])})" if x.get("absent_classes") else ""
            lines.append(
                f"| {name}{absent} | {x.get('n', '?')} | {len(x.get('classes_present') or [])} | {_num(x.get('ua'))} | "
                f"{_num(x.get('wa'))} | {_num(x.get('macro_f1'))} | {_num(x.get('chance_ua'))} | "
                f"{_num(x.get('baseline_ua')) if x.get('baseline_ua') is not None else '-'} | {_num(x.get('ece'))} |"
            )
        mean = sum(float(x["ua"]) for x in per.values()) / len(per)
        lines += ["", f"Mean UA over the held-out corpora: {mean:.4f}.", ""]
    return lines


def base_model(info: dict) -> str | None:
    """The hub id the backbone started from; None for tiny random builds and local directories."""
    found = branches(info)
    model = found[0] if found else {}
    name = model.get("backbone")
    if not name or model.get("tiny"):
        return None
    from emovox.backbones.registry import REGISTRY

    hub_id = REGISTRY[name].hub_id if name in REGISTRY else str(name)
    if Path(hub_id).exists() or hub_id.count("/") != 1 or hub_id.startswith(("/", ".")):
        return None
    return hub_id


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-")


def _num(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "?"


def selection_text(training: dict) -> str:
    """"validation UA 0.9" or, for a run that chose on another metric, "validation weighted-F1 0.58 (UA 0.41)"."""
    metric = training.get("select_on", "ua")
    if metric == "ua" or training.get("best_valid_score") is None:
        return f"validation UA {_num(training.get('best_valid_ua'))}"
    name = {"wa": "WA", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}.get(metric, metric)
    return f"validation {name} {_num(training.get('best_valid_score'))} (UA {_num(training.get('best_valid_ua'))})"

"""Typed experiment configuration, loaded from YAML with ``--set key=value`` overrides.

One config describes one experiment end to end (corpus, protocol, model, training), so a
recipe file is the whole record of how a number was produced. Every field has the papers'
default; unknown keys are errors, because a typo that silently falls back to a default is how
irreproducible results are made. The ``model`` section belongs to its model kind
(``model.kind``, default ``classifier``): each kind in ``emovox.models.registry`` declares its own
typed section, so this module knows no kind by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from emovox.data.augment import AugmentConfig
from emovox.errors import ConfigError
from emovox.models.base import KindConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainConfig(_Strict):
    """Optimisation; defaults follow the IEMOCAP paper (AdamW 1e-5, batch 12, patience 3, 20 epochs)."""

    lr: float = Field(1e-5, gt=0)
    head_lr: float | None = Field(
        None, gt=0, description="Learning rate of everything outside the backbone (head, pooling, layer weights); default lr."
    )
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(12, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_epochs: int = Field(20, gt=0)
    patience: int = Field(3, gt=0, description="Stop after this many epochs without a gain in the select_on metric.")
    class_weights: Literal["inverse", "none"] = "inverse"
    select_on: Literal["ua", "wa", "macro_f1", "weighted_f1"] = Field(
        "ua",
        description="The validation metric that picks the epoch (and the search point, and early stopping): "
        "UA by default (the SER papers' figure); weighted_f1 for MELD-style reporting, where UA would pick an "
        "epoch that trades the frequent classes for the rare ones.",
    )
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="constant (the IEMOCAP paper) or linear: warm up over warmup_ratio of all optimizer steps, "
        "then decay linearly to zero at max_epochs (the EmoSPeech paper, and transformers' default).",
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Fraction of all optimizer steps spent warming up (linear schedule)."
    )
    seed: int = 0
    length_grouping: bool = Field(True, description="Batch clips of similar length together (less padding).")
    max_steps_per_epoch: int | None = Field(None, gt=0, description="Cap steps per epoch (smoke tests).")
    threads: int | None = Field(None, gt=0, description="torch intra-op threads; default: all available cores.")
    extract_threads: int | None = Field(
        None, gt=0,
        description="torch threads while frozen features are extracted (a large model's inference, which an idle "
        "second core speeds up even when a small head trains fastest on one; on a busy machine extra threads only "
        "wait: 120 EmoDB clips took 31 s with 2 threads against 17 s with 1 beside another job); default: train.threads.",
    )
    extract_precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="Arithmetic of the frozen feature extraction (cached separately per precision; the one used is "
        "recorded in results.json). auto: bf16 where the CPU has native bf16, else fp32. bf16 needs a CPU "
        "with native bf16 (avx512_bf16/AMX; anything else is refused, as emulated bf16 is slower than fp32): "
        "measured 2.6x faster on this project's Xeon (AMX); pooled Whisper-base states within 1.6 % (relative L2). "
        "Recognizers still run their backbone in fp32, so predictions differ from what the head saw in training by "
        "that much.",
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="Training-time augmentation (length: random crops and silence padding, on by default; speed, "
        "noise, SpecAugment optional). Deterministic under the seed; evaluation never augments.",
    )
    checkpoint_every_steps: int | None = Field(
        None,
        gt=0,
        description="Also write a resume checkpoint every N optimizer steps inside an epoch, so a crashed run "
        "resumes from there and not only from the last epoch end (the RAVDESS paper: 100). Default: epoch ends only.",
    )
    keep_checkpoints: int = Field(
        1,
        gt=0,
        description="Resume checkpoints kept (the newest K, step or epoch-end); resuming falls back to an older "
        "one when the newest cannot be read (the RAVDESS paper kept 2).",
    )
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers that receive the training curves, the config and each fold's test "
        "metrics (pip install 'emovox[tracking]'): TensorBoard event files in RUN/tensorboard/fold_k, and/or "
        "an MLflow run per fold (experiment = config name). Default: none.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="Where MLflow runs go; default $MLFLOW_TRACKING_URI, else an SQLite store in the run "
        "directory (sqlite:///RUN/mlflow.db).",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        """``report_to: tensorboard`` (one tracker) or ``none`` read as YAML scalars."""
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none")):
            return []
        return [v] if isinstance(v, str) else v

    @field_validator("report_to")
    @classmethod
    def _no_repeats(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class LabelsConfig(_Strict):
    """The classes a run learns (``emovox.corpora.pool``): ``merge`` renames first, then ``keep``."""

    keep: list[str] | Literal["shared", "all"] | None = Field(
        None,
        description="The label set: a list of names in this order (aliases such as fear, anger accepted), shared "
        "(the classes every corpus has; the default for several corpora) or all (every class of any corpus; the "
        "default for one corpus).",
    )
    merge: dict[str, str] = Field(default_factory=dict, description="Classes renamed before keep, e.g. {calm: neutral}.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """``labels: shared`` or ``labels: [angry, happy]`` mean ``labels: {keep: ...}``."""
        return {"keep": v} if isinstance(v, (str, list)) else v

    def policy(self):
        from emovox.corpora.pool import LabelPolicy

        keep = tuple(self.keep) if isinstance(self.keep, list) else self.keep
        return LabelPolicy(keep, dict(self.merge))


class ControlConfig(_Strict):
    """Controls reported beside the recipe's figure on the same folds (``emovox.training.control``)."""

    text: bool = Field(
        False,
        description="The text-only control: a character n-gram TF-IDF + logistic regression on the transcripts alone, "
        "fitted on each fold's training and validation parts, tested on its test part. A high figure means the words "
        "give the label away (ASED's full set), so the audio figure is not evidence of hearing emotion.",
    )
    transcripts: Literal["auto", "given", "asr"] = Field(
        "auto",
        description="auto: the corpus's transcripts where it has them, ASR for the others; given: the corpus's only "
        "(utterances without one are an error); asr: ASR for every clip (what a recognizer could read from the audio).",
    )
    asr: str | None = Field(
        None, description="Whisper model (directory or hub id) that transcribes clips; transcripts are cached."
    )
    asr_language: str | None = Field(None, description="The ASR's language (e.g. am, de); default: detected per clip.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """``control: text`` means ``control: {text: true}``."""
        if isinstance(v, str):
            if v.strip() != "text":
                raise ValueError(f"unknown control {v!r}; the control is text (control: text, or control: {{text: true, ...}})")
            return {"text": True}
        return v


class ExperimentConfig(_Strict):
    name: str = "experiment"
    corpus: str | list[str] = Field(
        description="Corpus spec FORMAT:PATH, e.g. emodb:../shared/data/emodb, or a list of specs (pooled: ids and "
        "speakers become <corpus>/<id>; see labels)"
    )
    labels: LabelsConfig | None = Field(
        None, description="Which classes the run learns: keep (a list, shared, all) and merge ({calm: neutral})."
    )
    protocol: str = Field(
        description="leave-one-session-out | leave-one-speaker-out | speaker-groups:K | stratified:K | holdout:F | official "
        "| leave-one-corpus-out | cross-corpus:TRAIN[:TEST] | in-corpus:K"
    )
    validation: Literal["paper", "strict"] = "strict"
    folds: list[int] | None = Field(None, description="Run only these folds (numbered from 1, as fold_1/...); default all.")
    model: SerializeAsAny[KindConfig] = Field(description="The model kind's section; `kind` picks it (default classifier).")
    search: dict[str, list[Any]] | None = Field(
        None,
        description="Hyperparameters to choose inside each fold on its validation part: dotted model.*/train.* "
        "fields -> values to try (every combination is trained; the best on validation UA is tested).",
    )
    baseline: bool = Field(
        True,
        description="Also fit the standard baseline (logistic regression on the concatenated, standardised, "
        "mean-pooled frozen layers of the recipe's utterance backbone) on the same folds and report it beside the recipe.",
    )
    train: TrainConfig = TrainConfig()
    cache_dir: Path | None = Field(None, description="Frozen-feature cache; default ~/.cache/emovox/features.")
    on_bad_audio: Literal["error", "skip"] = Field(
        "skip",
        description="An utterance that cannot be used (missing, corrupt, non-audio, empty, non-finite or "
        "shorter than 0.1 s audio; no transcript for a text model): skip (default) leaves it out of the "
        "run and lists it with its reason in results.json and report.md (and the CLI warns with a count); "
        "error stops the run at the first one, naming it.",
    )
    control: ControlConfig | None = Field(
        None, description="Controls beside the recipe's figure on the same folds (control: text: the text-only control)."
    )
    on_missing_class: Literal["error", "drop"] = Field(
        "error",
        description="A class with no training utterance in some fold: error stops naming the fold and class; "
        "drop leaves that class's test (and validation) utterances out of that fold only and lists them.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_kind(cls, v: Any) -> KindConfig:
        from emovox.models.registry import parse_config

        try:
            return parse_config(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("corpus", "protocol")
    @classmethod
    def _not_blank(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("must name at least one corpus")
            if len(set(v)) != len(v):
                raise ValueError("a corpus spec is listed twice")
        if any(not x.strip() for x in ([v] if isinstance(v, str) else v)):
            raise ValueError("must not be empty")
        return v

    @property
    def corpus_specs(self) -> list[str]:
        """The corpus specs, one or several."""
        return [self.corpus] if isinstance(self.corpus, str) else list(self.corpus)

    def open_corpus(self):
        """The run's corpus: the spec read as it is, or the specs pooled under ``labels`` (``emovox.corpora.load_corpora``)."""
        from emovox.corpora import load_corpora

        return load_corpora(self.corpus, self.labels.policy() if self.labels is not None else None)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = value


def _scalar(raw: str) -> Any:
    """YAML scalar, except that ``1e-4`` is a number (YAML 1.1 reads it as a string)."""
    if raw == "":
        return ""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["train.lr=1e-4", "model.mode=frozen"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set train.lr=1e-4")
        key, raw = pair.split("=", 1)
        try:
            value = _scalar(raw)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).strip()
            raise ConfigError(
                f"--set {pair!r}: the value is not valid YAML ({problem}); quote an item holding ',' '?' ':' or '#', "
                "e.g. --set 'corpus=[\"ased:data/ased?sentences=01,02\", \"emodb:data/emodb\"]'"
            ) from None
        set_dotted(out, key.strip(), value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def config_from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config; relative corpus paths are taken relative to the YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = _merge(data, parse_overrides(overrides))
    if isinstance(data.get("model"), dict):
        data["model"] = _resolve_backbones(data["model"], path.parent)
    cfg = config_from_dict(data, str(path))
    corpus = [resolve_spec_path(c, path.parent) for c in cfg.corpus_specs]
    update: dict[str, Any] = {"corpus": corpus[0] if isinstance(cfg.corpus, str) else corpus}
    if cfg.control is not None and cfg.control.asr:
        update["control"] = cfg.control.model_copy(update={"asr": resolve_local_path(cfg.control.asr, path.parent)})
    return cfg.model_copy(update=update)


#: Keys of a model section whose string values may be local paths (resolved like ``backbone``).
PATH_KEYS = ("backbone", "recognizer", "members", "llm", "audio", "model")


def _resolve_backbones(section: Any, base: Path) -> Any:
    """Every path-valued key of a model section made absolute (branches included): ``backbone``,
    ``recognizer``, late fusion's ``members``, and the LLM kinds' ``llm``, ``audio`` (audio-llm's
    Whisper) and ``model`` (qwen2-audio). Registry names and hub ids are left alone."""
    if isinstance(section, list):
        return [_resolve_backbones(x, base) for x in section]
    if not isinstance(section, dict):
        return section
    out = {}
    for k, v in section.items():
        if k in PATH_KEYS and isinstance(v, str):
            out[k] = resolve_local_path(v, base)
        elif k == "members" and isinstance(v, list):  # late fusion: always folders (runs/..., recognizers/...)
            out[k] = [resolve_local_path(x if x.startswith((".", "/", "~")) else f"./{x}", base) if isinstance(x, str)
                      else _resolve_backbones(x, base) for x in v]
        else:
            out[k] = _resolve_backbones(v, base)
    return out


def resolve_local_path(value: str, base: Path) -> str:
    """A backbone given as a relative directory (``../shared/models/whisper-base``) becomes
    absolute; registry names and hub ids (``org/name``) are left alone."""
    if not value.startswith((".", "/", "~")):
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    from_cwd = (Path.cwd() / p).resolve()
    return str(from_cwd if from_cwd.exists() or not (base / p).exists() else (base / p).resolve())


def resolve_spec_path(spec: str, base: Path) -> str:
    """Make the PATH of ``FORMAT:PATH`` absolute.

    A relative path is looked up from the current directory first (recipes are run from the
    project root and say ``../shared/...``), then from ``base`` (the recipe's folder).
    """
    if ":" not in spec:
        return spec
    fmt, rest = spec.split(":", 1)
    path_part, sep, query = rest.partition("?")
    p = Path(path_part).expanduser()
    if not p.is_absolute():
        from_cwd = (Path.cwd() / p).resolve()
        p = from_cwd if from_cwd.exists() or not (base / p).exists() else (base / p).resolve()
    return f"{fmt}:{p}{sep}{query}"

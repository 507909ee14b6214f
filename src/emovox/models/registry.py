"""The registry of model kinds: ``model.kind`` in a config or a recognizer directory -> its class.

Adding a way to combine models is one module with one ``ModelKind`` subclass plus one line in
``KINDS``. Entries are import paths, so a kind's heavy dependencies (peft, an LLM) load only when
that kind is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from emovox.errors import ConfigError, RecognizerError
from emovox.models.base import KindConfig, ModelKind

#: kind name -> "module:Class" of its ``ModelKind``.
KINDS: dict[str, str] = {
    "classifier": "emovox.models.classifier:ClassifierModel",
    "fusion": "emovox.models.fusion:FusionModel",
    "late-fusion": "emovox.models.late_fusion:LateFusionModel",
    # the LLM route (EmoSPeech paper): emovox.llm sits above models in the layering, so only its path is named here
    "llm-classifier": "emovox.llm.classifier:LLMClassifier",
    "audio-llm": "emovox.llm.audio_llm:AudioLLM",
    "qwen2-audio-lora": "emovox.llm.qwen2_audio:Qwen2AudioLoRA",
}

DEFAULT_KIND = "classifier"

#: Weight files emovox refuses to open: unpickling can run code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def kind_class(kind: str) -> type[ModelKind]:
    target = KINDS.get(kind)
    if target is None:
        raise ConfigError(f"unknown model kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def parse_config(data: Any, source: str = "model") -> KindConfig:
    """The typed config of the kind ``data["kind"]`` names (default ``classifier``)."""
    if isinstance(data, KindConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with the model's settings")
    data = dict(data)
    kind = data.setdefault("kind", DEFAULT_KIND)
    cls = kind_class(str(kind)).Config
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {source}.{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"invalid {kind} model configuration\n" + "\n".join(lines)) from None


def build(config: KindConfig, labels: Sequence[str], *, seed: int = 0, backbones=None) -> ModelKind:
    """A fresh model of ``config``'s kind, ready to train."""
    return kind_class(config.kind).build(config, labels, seed=seed, backbones=backbones)


def load(directory: Path, info: dict, labels: Sequence[str]) -> ModelKind:
    """The model a recognizer directory holds (its ``emovox.json`` already read into ``info``)."""
    try:
        config = parse_config(dict(info["model"], kind=info["kind"]), "emovox.json model")
    except ConfigError as exc:
        raise RecognizerError(f"{Path(directory) / 'emovox.json'}: {exc}") from None
    return kind_class(config.kind).load(Path(directory), config, labels)


def load_branch_backbone(path: Path, cfg) -> Any:
    """A branch's saved backbone, from safetensors only: a pickle in it is refused unread."""
    from emovox.backbones.loader import load_backbone
    from emovox.backbones.registry import saved_without_weights
    from emovox.errors import BackboneError

    path = Path(path)
    if not path.is_dir():
        raise RecognizerError(f"{path}: missing; the recognizer directory is incomplete")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise RecognizerError(
            f"{path}: holds pickled weights {pickles}; emovox never loads pickles (they can run code). "
            "Weights must be model.safetensors"
        )
    try:
        if not any(path.glob("*.safetensors")) and not saved_without_weights(path):  # openSMILE: its sidecar is all
            raise RecognizerError(f"{path}: no model.safetensors; the recognizer directory is incomplete")
        return load_backbone(str(path), max_tokens=cfg.max_tokens, max_seconds=cfg.max_seconds)
    except BackboneError as exc:
        message = str(exc)  # a saved openSMILE backbone's check names its directory itself
        raise RecognizerError(message if message.startswith(str(path)) else f"{path}: {message}") from None

"""Reading recognizer directories written by emovox 0.1 (``schema_version`` 1).

0.1 saved one backbone under ``backbone/`` and the rest in ``head.safetensors``, with three kinds
of head: ``frozen-features`` (linear probe), ``top-layers`` and ``end-to-end``. Each maps onto
today's ``classifier`` kind exactly: same standardisation statistics, layer weights and linear
layer, renamed. The one combination that does not map (learned attention pooling over a learned
weighted sum of layers: 0.1 mixed the frames first, today each layer is pooled first) is refused
with what to do. Loading is in memory: the old directory is not modified.

Deprecated: this module is removed in emovox 0.3.0. Until then, upgrade a 0.1 directory once with
``Recognizer.load(OLD).save(NEW)``, which writes ``schema_version`` 2.
"""

from __future__ import annotations

from pathlib import Path

import torch

from emovox.errors import RecognizerError
from emovox.models.base import check_tensors, read_weights
from emovox.models.classifier import ClassifierConfig, ClassifierModel
from emovox.models.registry import load_branch_backbone

V1_KINDS = ("end-to-end", "frozen-features", "top-layers")


def v1_config(info: dict) -> ClassifierConfig:
    """Today's classifier config for a 0.1 record (``info["model"]`` and ``info["kind"]``)."""
    meta = "emovox.json"
    kind = info.get("kind")
    if kind not in V1_KINDS:
        raise RecognizerError(f"{meta}: unknown kind {kind!r}; expected one of {list(V1_KINDS)}")
    m = dict(info.get("model") or {})
    layer_weights = bool(m.get("layer_weights"))
    if kind == "end-to-end" and layer_weights and m.get("pooling") == "attention":
        raise RecognizerError(
            f"{meta}: this emovox 0.1 recognizer pools a learned mix of layers with learned attention, which this "
            "version computes in another order; retrain it with `emovox train` (its config is in emovox.json "
            "'training' -> 'config'), or keep emovox 0.1 to use it"
        )
    data = {
        "name": "main",
        "backbone": m.get("backbone"),
        "mode": m.get("mode", "frozen"),
        "top_layers": m.get("top_layers", 2),
        "pooling": m.get("pooling", "auto"),
        "layers": "all" if layer_weights else "last",
        "combine": "weighted",
        "dropout": m.get("dropout", 0.1),
        "input": "pair" if m.get("context") else "utterance",
        "max_tokens": m.get("max_tokens", 100),
        "max_seconds": m.get("max_seconds", 10.0),
        # 0.1 standardised only probes and top-layer models (and never with a floor: the saved std is used as is)
        "standardize": bool(m.get("standardize", True)) if kind != "end-to-end" else False,
    }
    return ClassifierConfig.model_validate(data)


def v1_tensors(old: dict[str, torch.Tensor], kind: str, layer_weights: bool) -> dict[str, torch.Tensor]:
    """0.1 head tensor names -> today's classifier names."""
    new: dict[str, torch.Tensor] = {}
    for k, v in old.items():
        if k in ("feat_mean", "feat_std"):
            name = "reducer.standardize." + ("mean" if k == "feat_mean" else "std")
            new[name] = v if layer_weights else v[-1:]  # 0.1 standardised every layer, then took the last
        elif k == "layer_weights.weights":
            new["reducer.weights.weights"] = v
        elif k.startswith("linear."):
            new["head." + k] = v
        elif k.startswith("attention."):
            new["branch." + k] = v
        else:
            new[k] = v
    return new


def load_v1(directory: Path, info: dict, labels: list[str]) -> tuple[ClassifierModel, dict]:
    directory = Path(directory)
    cfg = v1_config(info)
    backbone = load_branch_backbone(directory / "backbone", cfg)
    model = ClassifierModel(cfg, labels, backbone)
    head = directory / "head.safetensors"
    tensors = v1_tensors(read_weights(head), info["kind"], cfg.layers == "all")
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("branch.backbone.") and k != "temperature"}
    if not model.reducer.standardize.enabled:
        expected = {k: v for k, v in expected.items() if not k.startswith("reducer.standardize.")}
    check_tensors(head, tensors, expected, f"an emovox 0.1 {info['kind']} head for {len(labels)} labels")
    model.load_state_dict(tensors, strict=False)
    upgraded = dict(info, kind="classifier", model=model.saved_config().model_dump(mode="json"), upgraded_from_schema=1)
    return model.eval(), upgraded

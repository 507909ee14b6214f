"""A cross-validation fold's trained model, rebuilt from its run directory (what late fusion reads per fold).

A model combined with others fold by fold must be the very model that fold trained: one trained
on all the data has seen every fold's test part. ``emovox cv`` keeps each fold's learnt weights
(everything that trained plus buffers such as standardisation statistics; frozen pretrained
weights are left out and reloaded from their source) and writes beside them, in
``fold_k/model.json``, what rebuilds the model: the kind's config, the labels, the seed (tiny test
backbones are rebuilt from it), the weights file and the temperature fitted on validation.

Runs written before ``model.json`` existed are read from their ``config.yaml``, the fold's
``best_model.safetensors`` and the temperature in its ``done.json`` (runs with a ``search`` grid
or a closed-form head need ``model.json``: which point won, or the fitted head, is not recoverable).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emovox.errors import RecognizerError
from emovox.models.base import ModelKind, read_weights

FOLD_MODEL = "model.json"
#: Written for models fitted without the trainer (a closed-form head), which keep no best_model file.
FOLD_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best_model.safetensors"


def frozen_names(model: torch.nn.Module) -> set[str]:
    """Names of the frozen parameters, tied (shared) ones under each of their names: ``named_parameters()``
    lists a tied weight once (SmolLM2's ``embed_tokens``), but ``state_dict()`` also holds it as
    ``lm_head.weight``, which would otherwise put the whole frozen output matrix (113 MB) into every
    LoRA checkpoint."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def learnt_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything but frozen parameters (the trainer's checkpoint content), shared tensors cloned."""
    frozen = frozen_names(model)
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        if name in frozen:
            continue
        out[name] = t.clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    return out


def write_fold_model(fold_dir: Path, model: ModelKind, weights: Path | None) -> None:
    """Record how to rebuild the fold's ``model``: from ``weights`` (its best-epoch checkpoint), or,
    when None, from a file written here with its current state."""
    from emovox.atomic import atomic_save_tensors, atomic_write_json

    fold_dir = Path(fold_dir)
    if weights is None:
        weights = fold_dir / FOLD_WEIGHTS
        atomic_save_tensors(weights, {k: v.contiguous() for k, v in learnt_state(model).items()}, metadata={"format": "pt"})
    atomic_write_json(
        fold_dir / FOLD_MODEL,
        {
            "format": 1,
            "kind": model.kind,
            "model": json.loads(model.saved_config().model_dump_json()),
            "labels": list(model.labels),
            "seed": int(model.seed),
            "weights": str(Path(weights).resolve().relative_to(fold_dir.resolve())),
            "temperature": float(model.temperature),
            "embed_width": _width(model),
        },
    )


def _width(model: ModelKind) -> int | None:
    try:
        return int(model.embed_width())
    except NotImplementedError:
        return None


def fold_record(fold_dir: Path) -> dict[str, Any]:
    """``model.json`` of a fold, or the same record reconstructed from a run written before it existed."""
    import yaml

    fold_dir = Path(fold_dir)
    path = fold_dir / FOLD_MODEL
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RecognizerError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != 1:
            raise RecognizerError(f"{path}: not a fold model record of format 1")
        return record
    run_dir, done = fold_dir.parent, fold_dir / "done.json"
    if not done.is_file():
        raise RecognizerError(f"{fold_dir}: this fold has not finished (no done.json); finish the run with `emovox cv`")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        info = json.loads(done.read_text(encoding="utf-8"))
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecognizerError(f"{run_dir}: not a finished emovox cv run ({exc})") from None
    if config.get("search") or not (fold_dir / BEST_WEIGHTS).is_file():
        raise RecognizerError(
            f"{fold_dir}: written by an emovox without fold model records (model.json), and its model cannot be rebuilt "
            "(a search grid or a closed-form head); run it again with `emovox cv --fresh`"
        )
    return {
        "format": 1,
        "kind": config["model"].get("kind", "classifier"),
        "model": config["model"],
        "labels": results["label_set"],
        "seed": int(config.get("train", {}).get("seed", 0)),
        "weights": BEST_WEIGHTS,
        "temperature": float((info.get("calibration") or {}).get("temperature", 1.0)),
        "embed_width": None,
    }


def load_fold_model(fold_dir: Path, *, backbones=None) -> ModelKind:
    """The model a finished cv fold tested, in eval mode (``RecognizerError`` naming what is missing)."""
    from emovox.models import registry
    from emovox.models.base import check_tensors

    fold_dir = Path(fold_dir)
    record = fold_record(fold_dir)
    config = registry.parse_config(dict(record["model"]), f"{fold_dir / FOLD_MODEL} model")
    labels: Sequence[str] = record["labels"]
    model = registry.build(config, labels, seed=int(record["seed"]), backbones=backbones)
    tensors = read_weights(fold_dir / record["weights"])
    expected = learnt_state(model)
    check_tensors(fold_dir / record["weights"], tensors, expected, f"the {config.kind} model of {fold_dir}")
    model.load_state_dict(tensors, strict=False)
    with torch.no_grad():
        model.temperature.fill_(float(record["temperature"]))
    return model.eval()

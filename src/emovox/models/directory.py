"""A recognizer directory on disk: its layout, its integrity, and the formats emovox can read.

Layout (``schema_version`` 2)::

    MODEL_DIR/
      emovox.json          labels, kind, modality, the kind's config, preprocessing, training record,
                           and the sha256 of every other file (``files``); written last
      branches/<name>/     each branch's backbone (HF config + safetensors + tokenizer/extractor)
      adapters/<name>/     LoRA adapters (peft's own format, safetensors), for kinds that have them
      weights.safetensors  everything else (heads, projections, standardisation, layer weights)
      README.md            model card

A directory is rebuilt from its own files: the kind's config in ``emovox.json`` says what to
construct, and the files hold the weights. Only safetensors and JSON are read, so loading a
recognizer from a stranger cannot run code; every file is checked against its recorded sha256
before it is used, so a damaged or edited file is named instead of loading silently wrong
weights (or failing with an unrelated message deep inside a library). Directories written by
emovox 0.1 (``schema_version`` 1: ``backbone/`` + ``head.safetensors``) are still read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from emovox.atomic import atomic_write_json, atomic_write_text, file_problem, sha256_file
from emovox.audio import SAMPLE_RATE
from emovox.errors import RecognizerError
from emovox.models import registry
from emovox.models.base import ModelKind

SCHEMA_VERSION = 2
META_FILE = "emovox.json"
MODALITIES = ("audio", "text", "audio+text")
#: What a recognizer directory owns besides ``emovox.json``: only these are checksummed (and replaced by
#: ``train --force``); anything else a user keeps in the folder is theirs and never read. ``tensorboard/`` holds the
#: final model's training curves (``train.report_to``), kept with it as a hub model keeps ``runs/``; an MLflow store
#: beside it is not part of the recognizer (a database MLflow may still write to). ``runtime/`` is what inference needs
#: without torch (``emovox.inference.export``, ``emovox.inference.runtime``).
OWNED = ("weights.safetensors", "README.md", "branches", "adapters", "members", "tensorboard", "llm.json", "runtime")


def owned_files(directory: Path) -> list[Path]:
    owned = (p for p in directory.rglob("*") if p.is_file() and p.relative_to(directory).parts[0] in OWNED)
    return sorted(p for p in owned if not p.name.startswith("."))


def modality(fields: set[str]) -> str:
    """``audio``, ``text`` or ``audio+text``: what a recognizer must be given."""
    audio = any("audio" in f for f in fields)
    text = any("text" in f for f in fields)
    return "audio+text" if audio and text else ("audio" if audio else "text")


def save(directory: Path, model: ModelKind, labels: Sequence[str], info: dict, *, card: str | None = None) -> Path:
    """Write ``model`` and its record; ``emovox.json`` goes last, so a directory that has it is complete."""
    from emovox.model_card import model_card

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory)
    fields = sorted(model.fields())
    meta = dict(info)
    meta.update(
        schema_version=SCHEMA_VERSION,
        kind=model.kind,
        modality=modality(set(fields)),
        fields=fields,
        labels=list(labels),
        model=json.loads(model.saved_config().model_dump_json()),
        preprocessing={"sample_rate": SAMPLE_RATE, "max_seconds": model.max_seconds()},
        describe=model.describe(),
    )
    atomic_write_text(directory / "README.md", card or model_card(meta, labels, directory=directory))
    meta["files"] = {str(p.relative_to(directory)): sha256_file(p) for p in owned_files(directory)}
    atomic_write_json(directory / META_FILE, meta)
    return directory


def record_files(directory: Path, **entries) -> dict:
    """Rewrite ``emovox.json`` with ``entries`` set (a None value removes the key) and the sha256 of every
    owned file, as ``save`` records them: for files added to a saved recognizer (its runtime)."""
    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    for key, value in entries.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    meta["files"] = {str(p.relative_to(directory)): sha256_file(p) for p in owned_files(directory)}
    atomic_write_json(directory / META_FILE, meta)
    return meta


def read_meta(directory: Path) -> dict:
    """``emovox.json``, validated: schema, labels; raises ``RecognizerError`` naming the problem."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not directory.exists():
        raise RecognizerError(f"{directory}: recognizer directory not found; train one with `emovox train`")
    if not meta_path.is_file():
        raise RecognizerError(f"{directory}: not a recognizer directory (no emovox.json); train one with `emovox train`")
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecognizerError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise RecognizerError(f"{meta_path}: expected a JSON object")
    if info.get("schema_version") not in (1, SCHEMA_VERSION):
        from emovox.version import __version__

        raise RecognizerError(
            f"{meta_path}: schema_version {info.get('schema_version')!r}; "
            f"this emovox ({__version__}) reads 1 and {SCHEMA_VERSION}"
        )
    labels = info.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or len(set(labels)) != len(labels)
        or not all(isinstance(x, str) for x in labels)
    ):
        raise RecognizerError(f"{meta_path}: 'labels' must be a non-empty list of distinct names")
    if info.get("modality") not in MODALITIES:
        raise RecognizerError(f"{meta_path}: unknown modality {info.get('modality')!r}; expected one of {list(MODALITIES)}")
    if info["schema_version"] == SCHEMA_VERSION:
        if not isinstance(info.get("kind"), str) or not isinstance(info.get("model"), dict):
            raise RecognizerError(f"{meta_path}: 'kind' and 'model' (the model's config) are required")
        if not isinstance(info.get("files"), dict) or not info["files"]:
            raise RecognizerError(
                f"{meta_path}: 'files' (the sha256 of every file) is missing; the directory was not written by emovox"
            )
    return info


def verify(directory: Path, info: dict) -> None:
    """Every file ``emovox.json`` lists exists and has its recorded sha256."""
    files = info.get("files")
    if files is None:
        return  # emovox 0.1 recorded no checksums
    for rel, digest in files.items():
        path = Path(directory) / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise RecognizerError(f"{Path(directory) / META_FILE}: file entry {rel!r} points outside the directory")
        problem = file_problem(path, digest)
        if problem == "missing":
            raise RecognizerError(f"{path}: missing; the recognizer directory is incomplete (copy it again)")
        if problem == "damaged":
            raise RecognizerError(
                f"{path}: damaged or modified (its sha256 differs from the one recorded when the recognizer was saved); "
                "copy the directory again or retrain"
            )


def load(directory: Path) -> tuple[ModelKind, list[str], dict]:
    """``(model, labels, info)`` of a recognizer directory, after checking every file."""
    directory = Path(directory)
    info = read_meta(directory)
    labels = list(info["labels"])
    if info["schema_version"] == 1:
        from emovox.models.legacy import load_v1

        model, info = load_v1(directory, info, labels)
        return model, labels, info
    verify(directory, info)
    model = registry.load(directory, info, labels)
    return model.eval(), labels, info

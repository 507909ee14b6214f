"""Disk cache of what frozen model parts compute: computed once, checked every time it is read.

A frozen backbone gives the same output for the same input every time, yet the papers' scripts
recompute it for every fold, epoch and experiment. emovox stores each input's frozen prefix
(per-layer pooled states for a probe, a frozen bottom's frames for top-layer fine-tuning) under a
key made of what computes it (backbone weights, preprocessing, what is kept) and the exact input
content, so folds, epochs, reruns, resumed runs and later experiments (ensembles, context and
fusion models) reuse it, and a killed extraction resumes where it stopped.

Per-layer pooled states are stored as ``pooled [n, W]``: hidden states ``0..n-1``, as many as the
model that computed them needed (extraction stops after the highest layer it reads). Its shape is
the record of which layers an entry holds; an entry with more layers than a reader needs serves it
(``AtLeast``), one with fewer is computed again (deeper) and replaced.

Entries are small safetensors files written atomically. A cache lives on disk for months and is
shared by processes, so an entry is never trusted blindly: one that cannot be read, has the wrong
names, dtype or shape, or holds NaN/inf is deleted and recomputed, and the caller is warned once
with the count (``CacheWarning``), instead of a shape error deep in a model or a "loss became nan".
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emovox.atomic import atomic_save_tensors
from emovox.errors import EmovoxWarning

#: Shape of one cached tensor: a tuple of sizes, ``None`` where any size is allowed, ``AtLeast(n)`` where
#: any size from ``n`` up is (an entry holding more hidden states than a reader needs still serves it).
Shape = tuple


class AtLeast(int):
    """A size that may be exceeded: ``AtLeast(6)`` accepts 6, 7, ... (shown as ``>=6``)."""

    def __repr__(self) -> str:
        return f">={int(self)}"

#: Bump when what is stored for an existing key changes meaning.
CACHE_FORMAT = 1


class CacheWarning(EmovoxWarning):
    """Damaged cache entries were found and recomputed."""


def default_cache_dir() -> Path:
    root = os.environ.get("EMOVOX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emovox")
    return Path(root) / "features"


def weights_fingerprint(source: str) -> str:
    """Identify local weights by file names, sizes and modification times (cheap, no reads);
    a hub id identifies itself."""
    p = Path(source)
    if not p.is_dir():
        return source
    parts = []
    for f in sorted(p.iterdir()):
        if f.suffix in {".safetensors", ".json", ".bin", ".model"}:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return str(p.resolve()) + "|" + ",".join(parts)


def backbone_identity(backbone, *, tiny: bool, seed: int) -> dict:
    """What makes a backbone's outputs what they are: weights (or an extractor's version), family,
    preprocessing limits, precision."""
    spec = backbone.spec
    ident = {
        "format": CACHE_FORMAT,
        "source": weights_fingerprint(spec.hub_id),
        "family": spec.family,
        "tiny": bool(tiny),
        "seed": seed if tiny else None,
        "max_seconds": getattr(backbone, "max_seconds", None),
        "max_tokens": getattr(backbone, "max_tokens", None),
    }
    extra = getattr(backbone, "cache_identity", None)  # e.g. openSMILE: its package version and feature set
    if extra is not None:
        ident.update(extra())
    precision = getattr(backbone, "inference_precision", "fp32")  # set by emovox.accel.optimize_for_inference
    if precision != "fp32":  # absent for fp32, so existing fp32 caches keep their keys
        ident["precision"] = precision
    return ident


def cache_key(name: str, ident: Mapping[str, Any]) -> str:
    """A folder name: readable prefix + a digest of everything in ``ident``."""
    digest = hashlib.sha256(json.dumps(dict(ident), sort_keys=True).encode()).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-40:]
    return f"{safe}-{digest}"


def item_key(item) -> str:
    """Content hash of one input: the audio samples themselves, or the text (and its context)."""
    h = hashlib.sha256()
    if isinstance(item, np.ndarray):
        h.update(b"audio")
        h.update(np.ascontiguousarray(item, dtype=np.float32).tobytes())
    else:
        from emovox.data.examples import EndText

        h.update(b"text-end" if isinstance(item, EndText) else b"text")
        h.update(json.dumps(item if isinstance(item, str) else list(item)).encode())
    return h.hexdigest()


def check_entry(tensors: Mapping[str, torch.Tensor], expect: Mapping[str, Shape]) -> str | None:
    """Why an entry does not fit ``expect`` (names -> shapes), or None when it does."""
    if set(tensors) != set(expect):
        return f"holds {sorted(tensors)}, expected {sorted(expect)}"
    for name, shape in expect.items():
        t = tensors[name]
        if t.dtype != torch.float32:
            return f"{name} is {t.dtype}, expected float32"
        if t.dim() != len(shape) or not all(_fits(s, n) for s, n in zip(shape, t.shape, strict=True)):
            return f"{name} has shape {tuple(t.shape)}, expected {tuple('*' if s is None else s for s in shape)}"
        if not bool(torch.isfinite(t).all()):
            return f"{name} holds NaN or infinite values"
    return None


def _fits(expected, size: int) -> bool:
    if expected is None:
        return True
    return size >= expected if isinstance(expected, AtLeast) else size == expected


def _too_shallow(tensors: Mapping[str, torch.Tensor], expect: Mapping[str, Shape]) -> bool:
    """An entry of the expected names, dtype and rank whose only flaw is a dimension below its ``AtLeast``."""
    if set(tensors) != set(expect):
        return False
    short = False
    for name, shape in expect.items():
        t = tensors[name]
        if t.dim() != len(shape):
            return False
        for s, n in zip(shape, t.shape, strict=True):
            if isinstance(s, AtLeast) and n < s:
                short = True
            elif not _fits(s, n):
                return False
    return short


class FeatureCache:
    """One folder per model key; one small safetensors file (a dict of tensors) per input."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.damaged: list[tuple[Path, str]] = []
        self.hits = self.writes = 0  # entries read back / computed and stored, for summaries (emovox extract)

    def _path(self, model_key: str, key: str) -> Path:
        return self.root / model_key / key[:2] / f"{key}.safetensors"

    def get(self, model_key: str, key: str, expect: Mapping[str, Shape] | None = None) -> dict[str, torch.Tensor] | None:
        """The entry, or None when absent or damaged (a damaged one is deleted and remembered)."""
        from safetensors.torch import load_file

        path = self._path(model_key, key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # truncated or not safetensors: recompute, never trust
            why = f"unreadable ({type(exc).__name__})"
        else:
            if expect is not None and _too_shallow(tensors, expect):
                return None  # a sound entry with fewer layers than asked for: computed deeper and replaced, not damaged
            why = check_entry(tensors, expect) if expect is not None else None
            if why is None:
                self.hits += 1
                return tensors
        self.damaged.append((path, why))
        path.unlink(missing_ok=True)
        return None

    def put(self, model_key: str, key: str, tensors: Mapping[str, torch.Tensor]) -> None:
        atomic_save_tensors(self._path(model_key, key), {k: v.contiguous() for k, v in tensors.items()}, durable=False)
        self.writes += 1

    def warn_damaged(self) -> None:
        """One warning for every damaged entry found since the last call."""
        if not self.damaged:
            return
        path, why = self.damaged[0]
        warnings.warn(
            f"{len(self.damaged)} damaged feature-cache entr{'y' if len(self.damaged) == 1 else 'ies'} under {self.root} "
            f"{'was' if len(self.damaged) == 1 else 'were'} recomputed (e.g. {path.name}: {why})",
            CacheWarning,
            stacklevel=3,
        )
        self.damaged = []


def fill(
    items: Sequence[Any],
    lengths: Sequence[float],
    compute: Callable[[list[Any]], list[dict[str, torch.Tensor]]],
    *,
    cache: FeatureCache | None,
    model_key: str | None,
    expect: Callable[[Any], Mapping[str, Shape]] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    description: str = "features",
) -> list[dict[str, torch.Tensor]]:
    """``compute`` for every item, in length-grouped batches, computing only what the cache lacks.

    ``compute`` takes a batch of items and returns one dict of float32 tensors per item;
    ``expect(item)`` gives the shapes a cached entry for that item must have.
    """
    from emovox.data.batching import length_grouped_batches
    from emovox.progress import progress_bar

    cached = cache is not None and model_key is not None
    keys = [item_key(x) for x in items] if cached else []
    found: dict[int, dict[str, torch.Tensor]] = {}
    if cached:
        for i, k in enumerate(keys):
            t = cache.get(model_key, k, expect(items[i]) if expect is not None else None)
            if t is not None:
                found[i] = t
        cache.warn_damaged()
    todo = [i for i in range(len(items)) if i not in found]
    if todo:
        batches = length_grouped_batches([lengths[i] for i in todo], batch_size, shuffle=False)
        with progress_bar(total=len(todo), desc=description, unit="utt", disable=not progress) as bar:
            for b in batches:
                idx = [todo[j] for j in b]
                for i, out in zip(idx, compute([items[i] for i in idx]), strict=True):
                    found[i] = {k: v.detach().float().contiguous().clone() for k, v in out.items()}
                    if cached:
                        cache.put(model_key, keys[i], found[i])
                bar.update(len(idx))
    return [found[i] for i in range(len(items))]

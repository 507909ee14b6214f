"""Disk cache of frozen-backbone embeddings.

A frozen backbone gives the same embedding for the same clip every time, yet the papers'
scripts recompute it for every fold, epoch and experiment. Here each utterance's per-layer
pooled embedding is computed once and stored under a key made of the backbone's identity
(name, weights, pooling, preprocessing) and the exact input content, so folds, epochs, reruns
and later experiments (ensembles, context models) reuse it, and a killed extraction resumes
where it stopped. Entries are safetensors files written atomically.

Mean pooling is linear, so a learned weighted sum over layers of per-layer mean-pooled vectors
equals mean pooling of the weighted sum of frames: caching ``[layers, hidden]`` per utterance
loses nothing for the linear-probe and layer-weighting heads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emovox.accel import onednn_linears
from emovox.data.batching import length_grouped_batches
from emovox.data.examples import Example

FEATURE_FORMAT = 1


def default_cache_dir() -> Path:
    root = os.environ.get("EMOVOX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emovox")
    return Path(root) / "features"


def _weights_fingerprint(source: str) -> str:
    """Identify local weights by file names, sizes and modification times (cheap, no reads)."""
    p = Path(source)
    if not p.is_dir():
        return source
    parts = []
    for f in sorted(p.iterdir()):
        if f.suffix in {".safetensors", ".json", ".bin", ".model"}:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return str(p.resolve()) + "|" + ",".join(parts)


def backbone_key(backbone, *, tiny: bool, seed: int) -> str:
    """The part of the cache key that names what computes the features."""
    spec = backbone.spec
    ident = {
        "format": FEATURE_FORMAT,
        "source": _weights_fingerprint(spec.hub_id),
        "family": spec.family,
        "pooling": spec.pooling,
        "tiny": bool(tiny),
        "seed": seed if tiny else None,
        "max_seconds": getattr(backbone, "max_seconds", None),
        "max_tokens": getattr(backbone, "max_tokens", None),
        "layers": "all",
    }
    precision = getattr(backbone, "inference_precision", "fp32")  # set by emovox.accel.optimize_for_inference
    if precision != "fp32":  # absent for fp32, so existing fp32 caches keep their keys
        ident["precision"] = precision
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)[-40:]
    return f"{safe}-{digest}"


def item_key(item) -> str:
    """Content hash of one input: the audio samples themselves, or the text (and its context)."""
    h = hashlib.sha256()
    if isinstance(item, np.ndarray):
        h.update(b"audio")
        h.update(np.ascontiguousarray(item, dtype=np.float32).tobytes())
    else:
        h.update(b"text")
        h.update(json.dumps(item if isinstance(item, str) else list(item)).encode())
    return h.hexdigest()


class FeatureCache:
    """One folder per backbone key; one small safetensors file per input."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def _path(self, model_key: str, key: str) -> Path:
        return self.root / model_key / key[:2] / f"{key}.safetensors"

    def get(self, model_key: str, key: str) -> torch.Tensor | None:
        path = self._path(model_key, key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["pooled"]
        except Exception:  # a damaged entry is recomputed, never trusted
            path.unlink(missing_ok=True)
            return None

    def put(self, model_key: str, key: str, pooled: torch.Tensor) -> None:
        path = self._path(model_key, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"pooled": pooled.contiguous()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def pool_all_layers(backbone, inputs: dict) -> torch.Tensor:
    """[B, L, H]: every hidden layer pooled the family's way (mean, last token, EOS)."""
    from emovox.models.pooling import pool

    enc = backbone(inputs, all_layers=True)
    if backbone.spec.pooling == "mean" and bool(enc.mask.all()):
        return enc.hidden.mean(dim=-2).transpose(0, 1)  # no padding in this batch: the plain mean is the masked one
    return pool(enc.hidden, enc.mask, backbone.spec.pooling, eos_mask=enc.eos_mask).transpose(0, 1)


def extract_pooled(
    backbone,
    examples: Sequence[Example],
    *,
    cache: FeatureCache | None,
    model_key: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    description: str = "features",
) -> torch.Tensor:
    """Per-layer pooled embeddings ``[N, L, H]`` for ``examples``, computing only what is missing."""
    from emovox.progress import progress_bar

    cached = cache is not None and model_key is not None
    keys = [item_key(e.item) for e in examples] if cached else []  # content hashes only where a cache needs them
    found: dict[int, torch.Tensor] = {}
    if cached:
        for i, k in enumerate(keys):
            t = cache.get(model_key, k)
            if t is not None:
                found[i] = t
    todo = [i for i in range(len(examples)) if i not in found]
    if todo:
        backbone.eval()
        batches = length_grouped_batches([examples[i].length for i in todo], batch_size, shuffle=False)
        bar = progress_bar(total=len(todo), desc=description, unit="utt", disable=not progress)
        with torch.inference_mode(), onednn_linears(backbone):  # float32 GEMMs on oneDNN: see emovox.accel
            for b in batches:
                idx = [todo[j] for j in b]
                pooled = pool_all_layers(backbone, backbone.preprocess([examples[i].item for i in idx])).float()
                for row, i in enumerate(idx):
                    found[i] = pooled[row].clone()
                    if cached:
                        cache.put(model_key, keys[i], found[i])
                bar.update(len(idx))
        bar.close()
    return torch.stack([found[i] for i in range(len(examples))]) if examples else torch.empty(0)

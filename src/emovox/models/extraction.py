"""Offline extraction: a frozen backbone's per-layer pooled states (or a frozen bottom's frames), computed once
per input and kept in the disk cache (``emovox.cache``) under an identity that says what computed them.

A frozen branch (``models.branch``) never runs its backbone while training: ``extract_pooled`` fills the cache in
length-grouped real-length batches, stopping the backbone at the highest hidden state wanted (``top``), and
``extract_bottom`` does the same for ``finetune-top``'s frozen bottom. ``pooled_identity`` / ``pooled_cache_key``
are the cache identity of those states (the keys of emovox 0.1's feature cache, so old caches still serve);
``emovox extract``, the benchmarks and the export's checks call the same functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from emovox.audio import SAMPLE_RATE
from emovox.errors import EmovoxWarning
from emovox.models.pooling import pool, pooled_width


def pool_all_layers(backbone, inputs: dict, pooling: str, top: int | None = None) -> torch.Tensor:
    """``[B, L, W]``: the hidden states ``0..top`` (default: all) of ``backbone`` pooled over its real frames/tokens;
    the layers above ``top`` are not run where the family allows it (``Backbone.stop_after``)."""
    with backbone.stop_after(top):
        enc = backbone(inputs, all_layers=True)
    hidden = enc.hidden if top is None else enc.hidden[: top + 1]
    if pooling == "mean" and bool(enc.mask.all()):
        return hidden.mean(dim=-2).transpose(0, 1)  # no padding in this batch: the plain mean is the masked one
    return pool(hidden, enc.mask, pooling, eos_mask=enc.eos_mask).transpose(0, 1)


def pooled_identity(backbone, *, tiny: bool, seed: int, pooling: str | None = None) -> tuple[str, dict]:
    """Cache identity of a backbone's per-layer pooled states (the keys of emovox 0.1's feature cache)."""
    from emovox.cache import backbone_identity

    ident = backbone_identity(backbone, tiny=tiny, seed=seed)
    ident.update(pooling=pooling or backbone.spec.pooling, layers="all")
    return backbone.spec.name, ident


def pooled_cache_key(backbone, *, tiny: bool, seed: int, pooling: str | None = None) -> str:
    from emovox.cache import cache_key

    return cache_key(*pooled_identity(backbone, tiny=tiny, seed=seed, pooling=pooling))


def raw_item(x):
    """An ``Example``'s single input (its audio, else its text), or ``x`` itself when it is already raw."""
    if hasattr(x, "audio") and hasattr(x, "text"):
        return x.audio if x.audio is not None else x.text
    return x


def extract_pooled(
    backbone,
    items: Sequence,
    *,
    pooling: str | None = None,
    cache=None,
    model_key: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    description: str = "frozen features",
    top: int | None = None,
) -> torch.Tensor:
    """``[N, L, W]`` per-layer pooled states of ``items`` (clips, texts or single-input ``Example``s),
    in length-grouped real-length batches, computing only what ``cache`` lacks.

    ``top``: the highest hidden state wanted (default: the last); the backbone stops there and ``L`` is
    ``top + 1``. A cached entry holding more states serves as well (``emovox.cache.AtLeast``).
    """
    from emovox.accel import onednn_linears
    from emovox.cache import AtLeast, fill

    pooling = pooling or backbone.spec.pooling
    items = [raw_item(x) for x in items]
    if not items:
        return torch.empty(0)
    width = pooled_width(pooling, backbone.hidden_size)
    held = backbone.num_layers if top is None else top + 1

    def compute(batch: list) -> list[dict]:
        return [{"pooled": p} for p in pool_all_layers(backbone, backbone.preprocess(batch), pooling, top)]

    backbone.eval()
    with torch.inference_mode(), onednn_linears(backbone):  # float32 GEMMs on oneDNN: see emovox.accel
        rows = fill(
            items,
            [item_length(x) for x in items],
            compute,
            cache=cache,
            model_key=model_key,
            expect=lambda item: {"pooled": (AtLeast(held), width)},
            batch_size=batch_size,
            progress=progress,
            description=description,
        )
    return torch.stack([r["pooled"][:held] for r in rows])

def extract_bottom(
    backbone,
    items: Sequence,
    *,
    cut: int,
    pooling: str,
    width: int,
    cache,
    model_key: str,
    progress: bool,
    description: str,
) -> list[dict]:
    """Per item: the frames entering encoder layer ``cut + 1`` (``frames``, ``[T_i, H]``) and the pooled states
    ``0..cut`` below them (``lower``, ``[cut + 1, W]``): what ``finetune-top`` reads instead of running its frozen
    bottom, cached on disk by content like pooled features."""
    from emovox.accel import onednn_linears
    from emovox.cache import fill

    hidden = backbone.hidden_size
    expect: Callable = lambda item: {"frames": (None, hidden), "lower": (cut + 1, width)}  # noqa: E731
    backbone.eval()

    def rows(batch: list) -> list[dict]:
        enc = backbone(backbone.preprocess(batch), all_layers=True)
        lower = pool(enc.hidden[: cut + 1], enc.mask, pooling).transpose(0, 1)  # [B, cut+1, W]
        frames = enc.hidden[cut]
        return [{"frames": frames[i, : int(enc.mask[i].sum())], "lower": lower[i]} for i in range(len(batch))]

    with torch.inference_mode(), onednn_linears(backbone):  # float32 GEMMs on oneDNN: see emovox.accel
        return fill(items, [item_length(x) for x in items], rows, cache=cache, model_key=model_key, expect=expect,
                    progress=progress, description=description)


def item_length(item) -> float:
    """What orders items into length groups: seconds of audio, characters of text."""
    if isinstance(item, np.ndarray):
        return len(item) / SAMPLE_RATE
    if isinstance(item, tuple):
        return float(sum(len(t or "") for t in item))
    return float(len(item))


# -- a branch's frozen prefix, once per run -------------------------------------------------------------------------
def branch_identity(branch, *, tiny: bool, seed: int) -> tuple[str, dict]:
    """The cache identity of what ``branch`` precomputes: its backbone's pooled states, or its frozen bottom."""
    name, ident = pooled_identity(branch.backbone, tiny=tiny, seed=seed, pooling=branch.pooling)
    if branch.cache_mode == "bottom":
        ident.update(layers=None, bottom=branch.cut)
    return name, ident


def precompute(branch, examples: list, *, cache, seed: int, progress: bool = True, augment=None,
               precision: str = "fp32") -> list:
    """Examples with ``branch``'s frozen prefix in ``cached[branch.slot]`` (None where there is no input).

    With waveform augmentation on, ``augment.variants`` augmented copies of every clip are computed
    too (``cached[slot]["variants"]``, one row per copy): each training epoch then reads one view of
    each clip, the original or a copy (``Branch.collate``), without ever running the frozen part again.
    ``precision`` other than fp32 runs the frozen part on a bf16 copy of the backbone (cached apart).
    """
    from emovox.cache import cache_key

    slot = branch.slot
    variants = augment.variants if branch.augments(augment) else 0
    done = all(slot in e.cached and (e.cached[slot] is None or not variants or "variants" in e.cached[slot])
               for e in examples)
    if branch.cache_mode is None or done:
        return examples
    if variants and not branch.backbone.learned and augment.length and augment.pad[1] > 0:
        _warn_padded_functionals(branch.name, branch.backbone)
    present = [i for i, e in enumerate(examples) if branch.item(e) is not None]
    items = [branch.item(examples[i]) for i in present]
    name, ident = branch_identity(branch, tiny=branch.cfg.tiny, seed=seed)
    extractor = branch.backbone
    if precision != "fp32" and branch.backbone.learned:  # fixed features (openSMILE) have no arithmetic to lower
        from emovox.accel import optimize_for_inference

        ident = {**ident, "precision": precision}
        extractor = optimize_for_inference(branch.backbone, precision)
    key = cache_key(name, ident)
    rows = _prefix_rows(branch, extractor, items, cache, key, progress, f"({branch.name})")
    if variants:
        from emovox.data.augment import augment_audio, rng_for

        copies = [augment_audio(x, rng_for(seed, examples[i].id, 1_000_000 + k), augment)
                  for i, x in zip(present, items, strict=True) for k in range(variants)]
        extra = _prefix_rows(
            branch, extractor, copies, cache, key, progress, f"({branch.name}, {variants} augmented copies per clip)"
        )
        for j, row in enumerate(rows):
            row["variants"] = extra[j * variants : (j + 1) * variants]
    out = [e.with_cached(slot, None) for e in examples]
    for i, row in zip(present, rows, strict=True):
        out[i] = examples[i].with_cached(slot, row)
    return out


def _prefix_rows(branch, backbone, items: list, cache, key: str, progress: bool, what: str) -> list[dict]:
    """The frozen prefix of every item (cached on disk by content), computed by ``backbone`` (the branch's own, or a
    bf16 copy of it for ``train.extract_precision: bf16``)."""
    if branch.cache_mode == "pooled":
        pooled = extract_pooled(backbone, items, pooling=branch.pooling, cache=cache, model_key=key,
                                progress=progress, description=f"frozen features {what}", top=branch.top)
        return [{"pooled": p} for p in pooled]
    return extract_bottom(backbone, items, cut=branch.cut, pooling=branch.pooling, width=branch.width, cache=cache,
                          model_key=key, progress=progress, description=f"frozen bottom layers {what}")


def _warn_padded_functionals(name: str, backbone) -> None:
    warnings.warn(
        f"branch {name}: train.augment.length pads training clips with digital silence, which drives "
        f"{backbone.spec.name}'s functionals far outside any real clip's (on EmoDB, ComParE's spectral LPC gains "
        "reach 2e5 standard deviations): the head learns from inputs it never meets and its fit slows down. "
        "Set train.augment.length: false (or augment.pad: [0, 0])",
        EmovoxWarning,
        stacklevel=4,
    )

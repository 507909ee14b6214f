"""From frame/token states to one vector per utterance, ignoring padding exactly.

Every pooling here reads only the positions the mask marks real, so a padded batch pools to
what its items pool to one by one: mean over real frames/tokens (speech, text encoders), the
last real token (decoder-only LMs and XLNet, whose last token is the only one that has seen the
whole sequence; found through the mask, so left and right padding both work), or BART's last
end-of-sequence token (as BartForSequenceClassification). The RAVDESS paper also tried the sum
and the maximum over frames; x-vector style statistics pooling (``stats``) concatenates the mean
and the standard deviation over real frames, so it doubles the width. Hidden states may carry
leading dimensions (``[L, B, T, H]`` for all layers); the mask is always ``[B, T]``.
"""

from __future__ import annotations

import torch
from torch import nn

from emovox.errors import ConfigError

POOLING_KINDS = ("mean", "sum", "max", "stats", "last", "eos")


def pooled_width(kind: str, hidden_size: int) -> int:
    """Width of one pooled vector: statistics pooling concatenates mean and standard deviation."""
    return 2 * hidden_size if kind == "stats" else hidden_size


def _check(hidden: torch.Tensor, mask: torch.Tensor) -> None:
    if hidden.dim() < 3 or tuple(mask.shape) != tuple(hidden.shape[-3:-1]):
        raise ValueError(
            f"pooling needs hidden [..., B, T, H] and mask [B, T]; got {tuple(hidden.shape)} and {tuple(mask.shape)}"
        )


def _last_true(hidden: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """The state at each row's last selected position; zeros for a row with none."""
    positions = torch.arange(select.shape[-1], device=select.device).expand_as(select)
    index = torch.where(select, positions, torch.full_like(positions, -1)).max(dim=-1).values  # [B]
    found = index >= 0
    gather = index.clamp_min(0).view(*([1] * (hidden.dim() - 3)), -1, 1, 1)
    gather = gather.expand(*hidden.shape[:-2], 1, hidden.shape[-1])
    picked = torch.gather(hidden, -2, gather).squeeze(-2)
    return torch.where(found.unsqueeze(-1), picked, torch.zeros_like(picked))


def pool(hidden: torch.Tensor, mask: torch.Tensor, kind: str, *, eos_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., B, T, H]`` -> ``[..., B, H]`` over the real positions of ``mask``.

    ``eos`` uses ``eos_mask`` (``Encoded.eos_mask``) when given; without it, it is the last real
    token, which is the same position for BART's tokenizer (every sequence, truncated or not,
    ends with ``</s>``). A row with no real position pools to zeros.
    """
    _check(hidden, mask)
    mask = mask.bool()
    if kind in ("mean", "sum", "stats"):
        keep = mask.unsqueeze(-1)
        zero = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        total = torch.where(keep, hidden, zero).sum(dim=-2)
        if kind == "sum":
            return total
        count = keep.sum(dim=-2).clamp_min(1).to(hidden.dtype)
        mean = total / count
        if kind == "mean":
            return mean
        # population variance over the real frames, floored before the root so that a constant
        # (or one-frame) input has a finite gradient
        var = torch.where(keep, (hidden - mean.unsqueeze(-2)) ** 2, zero).sum(dim=-2) / count
        return torch.cat([mean, var.clamp_min(1e-10).sqrt()], dim=-1)
    if kind == "max":
        lowest = torch.finfo(hidden.dtype).min
        best = torch.where(mask.unsqueeze(-1), hidden, torch.full((), lowest, dtype=hidden.dtype, device=hidden.device))
        best = best.max(dim=-2).values
        return torch.where(mask.any(dim=-1).unsqueeze(-1), best, torch.zeros_like(best))  # no real frame: zeros
    if kind == "last":
        return _last_true(hidden, mask)
    if kind == "eos":
        if eos_mask is None:
            return _last_true(hidden, mask)
        eos = eos_mask.bool() & mask
        has_eos = eos.any(dim=-1, keepdim=True)
        return _last_true(hidden, torch.where(has_eos, eos, mask))
    raise ConfigError(f"unknown pooling '{kind}'; use one of {', '.join(POOLING_KINDS)} (or 'attention' in a model config)")


class AttentionPooling(nn.Module):
    """Learned attention pooling: a masked softmax over positions of a linear score.

    The score layer starts at zero, so training starts from exact masked mean pooling and
    learns which frames/tokens carry the emotion (the EmoSPeech 2024 winner's pooling).
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def weights(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[..., B, T]``: zero on padding, summing to one on real positions."""
        _check(hidden, mask)
        mask = mask.bool()
        scores = self.score(hidden).squeeze(-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return weights * mask.to(weights.dtype)  # exact zeros, also for an all-padding row

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = self.weights(hidden, mask)
        keep = mask.bool().unsqueeze(-1)
        hidden = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
        return (weights.unsqueeze(-1) * hidden).sum(dim=-2)


class WeightedLayerSum(nn.Module):
    """s3prl's Featurizer: a softmax-weighted sum over a backbone's hidden layers.

    Takes ``[L, ...]`` (all layers of frames ``[L, B, T, H]`` or of pooled vectors ``[L, B, H]``;
    mean pooling is linear, so both orders give the same result) and returns ``[...]``. Weights
    start equal (the layer average); ``normalize`` layer-normalises each layer first, as s3prl
    optionally does when layers differ in scale.
    """

    def __init__(self, num_layers: int, *, normalize: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        self.num_layers = num_layers
        self.normalize = normalize
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.weights, dim=0)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if states.shape[0] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} layers in dim 0, got tensor of shape {tuple(states.shape)}")
        if self.normalize:
            states = nn.functional.layer_norm(states, states.shape[-1:])
        w = self.layer_weights().to(states.dtype).view(-1, *([1] * (states.dim() - 1)))
        return (w * states).sum(dim=0)

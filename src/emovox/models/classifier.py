"""The paper's classifier: a backbone (or its cached features), pooling, dropout 0.1, one linear layer.

Two shapes of the same model. ``UtteranceClassifier`` runs the backbone and trains end to end
(fine-tuning, or frozen with learned attention pooling). ``FeatureClassifier`` is the frozen
linear probe over cached per-layer pooled features: it never runs the backbone while training,
which makes a whole leave-one-speaker-out experiment a matter of seconds once features exist.
Both return logits; the trainer does not care which it has.
"""

from __future__ import annotations

import torch
from torch import nn

from emovox.models.pooling import AttentionPooling, WeightedLayerSum, pool


class FeatureClassifier(nn.Module):
    """Standardise (training-fold statistics) -> [weighted layer sum | last layer] -> dropout -> linear.

    Standardisation matters for frozen speech features: a few Whisper/wav2vec2 dimensions are
    orders of magnitude larger than the rest and would dominate an unnormalised linear probe.
    The statistics are buffers, so they travel with the weights into the recognizer directory.
    """

    def __init__(self, num_layers: int, hidden_size: int, num_classes: int, *, layer_weights: bool, dropout: float, standardize: bool):
        super().__init__()
        self.num_layers = num_layers
        self.use_layer_weights = layer_weights
        self.standardize = standardize
        self.register_buffer("feat_mean", torch.zeros(num_layers, hidden_size))
        self.register_buffer("feat_std", torch.ones(num_layers, hidden_size))
        self.layer_weights = WeightedLayerSum(num_layers) if layer_weights else None
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, num_classes)

    @torch.no_grad()
    def fit_standardization(self, features: torch.Tensor) -> None:
        """``features``: [N, L, H] of the training part only (never validation or test)."""
        if not self.standardize:
            return
        self.feat_mean.copy_(features.mean(dim=0))
        self.feat_std.copy_(features.std(dim=0, unbiased=False).clamp_min(1e-5))

    def forward(self, inputs: dict) -> torch.Tensor:
        x = inputs["features"]  # [B, L, H]
        if self.standardize:
            x = (x - self.feat_mean) / self.feat_std
        if self.layer_weights is not None:
            x = self.layer_weights(x.transpose(0, 1))  # WeightedLayerSum takes [L, B, H]
        else:
            x = x[:, -1]
        return self.linear(self.dropout(x))


class UtteranceClassifier(nn.Module):
    """Backbone -> [weighted layer sum] -> pooling -> dropout -> linear, trained end to end."""

    def __init__(self, backbone, num_classes: int, *, pooling: str = "auto", layer_weights: bool = False, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.pooling_kind = backbone.spec.pooling if pooling == "auto" else pooling
        self.layer_weights = WeightedLayerSum(backbone.num_layers) if layer_weights else None
        self.attention = AttentionPooling(backbone.hidden_size) if self.pooling_kind == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(backbone.hidden_size, num_classes)

    def embed(self, inputs: dict) -> torch.Tensor:
        enc = self.backbone(inputs, all_layers=self.layer_weights is not None)
        hidden = self.layer_weights(enc.hidden) if self.layer_weights is not None else enc.hidden
        if self.attention is not None:
            return self.attention(hidden, enc.mask)
        return pool(hidden, enc.mask, self.pooling_kind, eos_mask=enc.eos_mask)

    def forward(self, inputs: dict) -> torch.Tensor:
        return self.linear(self.dropout(self.embed(inputs)))


class FrozenFeatureModel(nn.Module):
    """A frozen backbone feeding a ``FeatureClassifier``: the deployable form of a linear probe.

    Training never builds this (it reads cached features); inference does, so a recognizer
    trained on cached features predicts from raw audio with exactly the same computation.
    """

    def __init__(self, backbone, head: FeatureClassifier):
        super().__init__()
        self.backbone = backbone
        self.head = head
        backbone.freeze()

    def forward(self, inputs: dict) -> torch.Tensor:
        from emovox.features import pool_all_layers

        return self.head({"features": pool_all_layers(self.backbone, inputs)})

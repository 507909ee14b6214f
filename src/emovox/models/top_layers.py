"""Fine-tune only the top encoder layers; run the frozen bottom once and keep its output.

Full fine-tuning of a speech encoder costs a forward *and* backward pass through every layer
for every clip of every epoch of every fold: hours on a CPU even for EmoDB. Training only the
top K layers (and the head) keeps the adaptation where it matters most, while the frozen bottom
(convolutions, positions, first layers) is computed once per run.

With ``layer_weights`` the head sees every hidden state, as the frozen probe does: the frozen
bottom's states are mean-pooled once and cached, the top layers' states are pooled live, all of
them are standardised with statistics of the training part (taken before training, from the
pretrained weights) and mixed by a learned softmax weighting. This keeps what makes the frozen
probe strong (middle layers carry more emotion than Whisper's ASR-tuned last layer) and adds
what fine-tuning brings.

Given raw inputs (no cached ``frames``) the model runs the bottom itself, so the same module is
the deployable recognizer. Supported for Whisper encoders; other families raise a ConfigError.
"""

from __future__ import annotations

import torch
from torch import nn

from emovox.errors import ConfigError
from emovox.models.pooling import WeightedLayerSum, pool


class TopLayersClassifier(nn.Module):
    def __init__(
        self,
        backbone,
        num_classes: int,
        *,
        top_layers: int,
        dropout: float = 0.1,
        layer_weights: bool = False,
        standardize: bool = False,
    ):
        super().__init__()
        if backbone.spec.family != "whisper":
            raise ConfigError(
                f"model.mode finetune-top supports Whisper encoders, not '{backbone.spec.family}'; "
                "use mode finetune or finetune-frozen-cnn for this backbone"
            )
        encoder = backbone.model.encoder
        n = len(encoder.layers)
        if not 1 <= top_layers <= n:
            raise ConfigError(f"model.top_layers must be between 1 and {n} for {backbone.spec.name}, not {top_layers}")
        self.backbone = backbone
        self.cut = n - top_layers
        self.num_states = n + 1
        backbone.freeze()
        for module in list(encoder.layers[self.cut :]) + [encoder.layer_norm]:
            for p in module.parameters():
                p.requires_grad_(True)
        self.standardize = standardize
        self.register_buffer("feat_mean", torch.zeros(self.num_states, backbone.hidden_size))
        self.register_buffer("feat_std", torch.ones(self.num_states, backbone.hidden_size))
        self.layer_weights = WeightedLayerSum(self.num_states) if layer_weights else None
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(backbone.hidden_size, num_classes)

    @torch.inference_mode()
    def bottom(self, inputs: dict) -> dict:
        """Frozen part: the input of layer ``cut``, its mask, and the bottom's pooled states."""
        enc = self.backbone(inputs, all_layers=True)
        lower = pool(enc.hidden[: self.cut + 1], enc.mask, "mean").transpose(0, 1)  # [B, cut+1, H]
        return {"frames": enc.hidden[self.cut], "mask": enc.mask, "lower": lower}

    def top(self, frames: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """States after each top layer; the last one layer-normed (as the encoder's output)."""
        encoder = self.backbone.model.encoder
        x = frames
        blocked = torch.finfo(x.dtype).min
        bias = torch.where(mask.bool(), torch.zeros((), dtype=x.dtype), torch.full((), blocked, dtype=x.dtype))
        attention = bias[:, None, None, :].expand(-1, 1, x.shape[1], x.shape[1])
        states = []
        for layer in encoder.layers[self.cut :]:
            x = layer(x, attention)
            states.append(x)
        states[-1] = encoder.layer_norm(x)
        return states

    def pooled_states(self, inputs: dict) -> torch.Tensor:
        """``[B, num_states, H]``: every hidden state, mean-pooled (bottom cached, top live)."""
        if "frames" not in inputs:
            inputs = self.bottom(inputs)
        live = torch.stack([pool(s, inputs["mask"], "mean") for s in self.top(inputs["frames"], inputs["mask"])], dim=1)
        return torch.cat([inputs["lower"], live], dim=1)

    @torch.no_grad()
    def fit_standardization(self, batches) -> None:
        """Per-state mean/std over the training part, from the weights as they are now."""
        if not self.standardize:
            return
        was = self.training
        self.eval()
        states = torch.cat([self.pooled_states(b) for b in batches])
        self.feat_mean.copy_(states.mean(dim=0))
        self.feat_std.copy_(states.std(dim=0, unbiased=False).clamp_min(1e-5))
        self.train(was)

    def forward(self, inputs: dict) -> torch.Tensor:
        states = self.pooled_states(inputs)
        if self.standardize:
            states = (states - self.feat_mean) / self.feat_std
        x = self.layer_weights(states.transpose(0, 1)) if self.layer_weights is not None else states[:, -1]
        return self.linear(self.dropout(x))


def frames_collate(batch) -> dict:
    """Zero-pad cached ``(frames [T_i, H], lower [cut+1, H])`` items to the batch's longest."""
    longest = max(e.item[0].shape[0] for e in batch)
    hidden = batch[0].item[0].shape[1]
    frames = torch.zeros(len(batch), longest, hidden)
    mask = torch.zeros(len(batch), longest, dtype=torch.bool)
    for i, e in enumerate(batch):
        frames[i, : e.item[0].shape[0]] = e.item[0]
        mask[i, : e.item[0].shape[0]] = True
    return {"frames": frames, "mask": mask, "lower": torch.stack([e.item[1] for e in batch])}


def extract_bottom(model: TopLayersClassifier, examples, *, batch_size: int = 16, progress: bool = True) -> list[tuple]:
    """The frozen bottom's output for every example: (frames trimmed to real length, pooled lower states)."""
    from emovox.progress import progress_bar

    from emovox.data.batching import length_grouped_batches

    out: list[tuple | None] = [None] * len(examples)
    model.eval()
    batches = length_grouped_batches([e.length for e in examples], batch_size, shuffle=False)
    with progress_bar(total=len(examples), desc="frozen bottom layers", unit="utt", disable=not progress) as bar:
        for b in batches:
            got = model.bottom(model.backbone.preprocess([examples[i].item for i in b]))
            for row, i in enumerate(b):
                real = int(got["mask"][row].sum())
                out[i] = (got["frames"][row, :real].clone(), got["lower"][row].clone())
            bar.update(len(b))
    return out  # type: ignore[return-value]

"""Fine-tune only the top encoder layers; run the frozen bottom once and keep its output.

Full fine-tuning of a speech encoder costs a forward *and* backward pass through every layer
for every clip of every epoch of every fold. On a CPU that is hours even for EmoDB. Training
only the top K layers (plus the head) keeps most of the adaptation that fine-tuning buys while
the frozen bottom — convolutions, position embeddings and the first layers — is computed once
per run: training then touches K layers only.

The model is deployed as a plain ``UtteranceClassifier`` (same modules, same state-dict keys,
same arithmetic: bottom then top is the whole encoder), so a recognizer trained this way loads
and predicts like any other.

Supported for Whisper encoders (the EmoDB main job); other families raise a ConfigError.
"""

from __future__ import annotations

import torch
from torch import nn

from emovox.errors import ConfigError
from emovox.models.pooling import pool


class TopLayersClassifier(nn.Module):
    def __init__(self, backbone, num_classes: int, *, top_layers: int, dropout: float = 0.1):
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
        backbone.freeze()
        for module in list(encoder.layers[self.cut :]) + [encoder.layer_norm]:
            for p in module.parameters():
                p.requires_grad_(True)
        self.pooling_kind = "mean"
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(backbone.hidden_size, num_classes)

    @torch.inference_mode()
    def bottom(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen part: the input of layer ``cut`` (``[B, T, H]``) and its frame mask."""
        enc = self.backbone(inputs, all_layers=True)
        return enc.hidden[self.cut], enc.mask

    def top(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        encoder = self.backbone.model.encoder
        x = frames
        blocked = torch.finfo(x.dtype).min
        bias = torch.where(mask.bool(), torch.zeros((), dtype=x.dtype), torch.full((), blocked, dtype=x.dtype))
        attention = bias[:, None, None, :].expand(-1, 1, x.shape[1], x.shape[1])
        for layer in encoder.layers[self.cut :]:
            x = layer(x, attention)
        return encoder.layer_norm(x)

    def forward(self, inputs: dict) -> torch.Tensor:
        hidden = self.top(inputs["frames"], inputs["mask"])
        return self.linear(self.dropout(pool(hidden, inputs["mask"], "mean")))

    def as_utterance_classifier(self):
        """The same weights as a whole-encoder classifier, for saving and inference."""
        from emovox.models.classifier import UtteranceClassifier

        model = UtteranceClassifier(self.backbone, self.linear.out_features, pooling="mean", dropout=self.dropout.p)
        model.linear = self.linear
        return model


def frames_collate(batch) -> dict:
    """Zero-pad cached ``[T_i, H]`` frame tensors to the batch's longest, with a mask."""
    longest = max(e.item.shape[0] for e in batch)
    hidden = batch[0].item.shape[1]
    frames = torch.zeros(len(batch), longest, hidden)
    mask = torch.zeros(len(batch), longest, dtype=torch.bool)
    for i, e in enumerate(batch):
        frames[i, : e.item.shape[0]] = e.item
        mask[i, : e.item.shape[0]] = True
    return {"frames": frames, "mask": mask}


def extract_bottom_frames(model: TopLayersClassifier, examples, *, batch_size: int = 16, progress: bool = True) -> list[torch.Tensor]:
    """The frozen bottom's output for every example, trimmed to its real frames (``[T_i, H]``)."""
    from tqdm.auto import tqdm

    from emovox.data.batching import length_grouped_batches

    out: list[torch.Tensor | None] = [None] * len(examples)
    model.eval()
    batches = length_grouped_batches([e.length for e in examples], batch_size, shuffle=False)
    with tqdm(total=len(examples), desc="frozen bottom layers", unit="utt", disable=not progress, leave=False) as bar:
        for b in batches:
            frames, mask = model.bottom(model.backbone.preprocess([examples[i].item for i in b]))
            for row, i in enumerate(b):
                out[i] = frames[row, : int(mask[row].sum())].clone()
            bar.update(len(b))
    return out  # type: ignore[return-value]

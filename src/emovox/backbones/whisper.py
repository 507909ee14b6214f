"""Whisper's encoder on the real length of each batch, never on 30 s of padding.

Whisper was trained on 30 s windows and transformers' ``WhisperEncoder.forward`` refuses any
other length. The IEMOCAP paper truncated the positional embeddings to 10 s instead; emovox
goes one step further and runs each batch at the length of its longest clip, slicing the
(sinusoidal, frozen) position table to that length. The forward below is WhisperEncoder's own,
written out from its submodules (conv1, conv2, embed_positions, layers, layer_norm), with
padding made invisible:

- log-mel is computed per clip on its real samples (WhisperFeatureExtractor without padding;
  its ``max - 8`` dynamic-range floor and scaling are then the clip's own), then zero-padded;
- after conv1+GELU the padded mel frames are zeroed, and after the stride-2 conv2+GELU the
  padded half-rate frames are zeroed, so each convolution's edge sees exactly the zeros it
  sees at the end of the lone clip;
- every encoder layer gets an attention mask hiding padded keys.

A padded batch then equals its clips run one by one (to float rounding), and an input of
exactly 3000 mel frames reproduces ``WhisperEncoder.forward`` (both are tested).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperPreTrainedModel

from emovox.audio import SAMPLE_RATE
from emovox.backbones.audio import AudioBackbone, length_mask, stack_time_major, truncated_encoder
from emovox.backbones.base import Encoded
from emovox.backbones.registry import BackboneSpec
from emovox.errors import BackboneError, ConfigError


class WhisperEncoderOnly(WhisperPreTrainedModel):
    """The Whisper encoder alone; checkpoint keys ``model.encoder.*`` map onto ``encoder.*``."""

    def __init__(self, config):
        super().__init__(config)
        self.encoder = WhisperEncoder(config)
        self.post_init()


class WhisperBackbone(AudioBackbone):
    """Whisper encoder states at 50 Hz for clips up to the model's 30 s position table."""

    def __init__(self, spec: BackboneSpec, model: WhisperEncoderOnly, feature_extractor, *, max_tokens: int,
                 max_seconds: float):
        config = model.config
        hop = int(feature_extractor.hop_length)  # samples per mel frame (10 ms)
        super().__init__(spec, model, feature_extractor, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=config.d_model, num_layers=config.encoder_layers + 1, min_samples=hop)
        positions = config.max_source_positions
        needed = math.ceil((self.max_samples // hop) / 2)
        if needed > positions:
            limit = positions * 2 * hop / SAMPLE_RATE
            raise BackboneError(
                f"max_seconds={max_seconds} needs {needed} Whisper positions but '{spec.name}' has {positions} "
                f"({limit:.0f} s); lower max_seconds"
            )

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        mels = [
            self.feature_extractor(clip, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np")[
                "input_features"
            ][0].T  # [frames, mel bins]: clip-own log-mel, time first for padding
            for clip in self._clips(items)
        ]
        features, mask = stack_time_major(mels)
        return {"input_features": features.transpose(1, 2).contiguous(), "attention_mask": mask}

    def stop_after(self, top: int | None):
        """Only the encoder layers below hidden state ``top`` run, and the final layer norm (which only the
        last state gets) is skipped unless ``top`` is the last state."""
        if top is None or top >= self.num_layers - 1:
            return nullcontext()
        return truncated_encoder(self.model.encoder, top, final_norm="layer_norm")

    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:
        encoder: WhisperEncoder = self.model.encoder
        features = inputs["input_features"]  # [B, mel, F]
        frames = inputs["attention_mask"].bool()  # [B, F]
        half = frames[:, ::2]  # conv2 (stride 2, pad 1): output t is real iff input 2t is
        # A batch without padding (equal-length clips, one clip) needs no masking at all: skip
        # the zeroing and the attention mask, which then runs the encoder exactly as stock.
        padded = not bool(frames.all())
        zero = torch.zeros((), dtype=features.dtype, device=features.device)

        def real(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return torch.where(mask.unsqueeze(1), t, zero) if padded else t

        x = real(features, frames)
        x = real(nn.functional.gelu(encoder.conv1(x)), frames)
        x = real(nn.functional.gelu(encoder.conv2(x)), half)
        x = x.permute(0, 2, 1)
        length = x.shape[1]
        if length > encoder.embed_positions.num_embeddings:
            raise BackboneError(
                f"a batch of {length} Whisper frames exceeds the model's {encoder.embed_positions.num_embeddings} "
                "positions; crop clips with max_seconds"
            )
        x = x + encoder.embed_positions.weight[:length]
        x = nn.functional.dropout(x, p=encoder.dropout, training=self.training)

        attention = None
        if padded:
            blocked = torch.finfo(x.dtype).min
            bias = torch.where(half, torch.zeros((), dtype=x.dtype, device=x.device),
                               torch.full((), blocked, dtype=x.dtype, device=x.device))
            attention = bias[:, None, None, :].expand(-1, 1, length, length)  # hide padded keys

        states = []
        for layer in encoder.layers:
            if all_layers:
                states.append(x)
            if self.training and encoder.layerdrop > 0.0 and torch.rand([]) < encoder.layerdrop:
                continue
            x = layer(x, attention)
        x = encoder.layer_norm(x)
        if all_layers:
            states.append(x)
            x = torch.stack(states)
        return Encoded(hidden=x, mask=length_mask(half.sum(dim=-1), length))


# -- the top layers alone (``mode: finetune-top``) -----------------------------------------------------------------
def unfreeze_top(backbone, top_layers: int) -> int:
    """Freeze everything but the top ``top_layers`` encoder layers and the final norm; return the cut (the index of
    the hidden state entering the first trained layer)."""
    encoder = backbone.model.encoder
    n = len(encoder.layers)
    if not 1 <= top_layers <= n:
        raise ConfigError(f"top_layers must be between 1 and {n} for {backbone.spec.name}, not {top_layers}")
    backbone.freeze()
    for module in list(encoder.layers[n - top_layers :]) + [encoder.layer_norm]:
        for p in module.parameters():
            p.requires_grad_(True)
    return n - top_layers


def top_states(backbone, frames: torch.Tensor, mask: torch.Tensor, cut: int) -> list[torch.Tensor]:
    """The hidden states of the encoder layers above ``cut``, run over cached bottom ``frames`` (``[B, T, H]``,
    padded keys hidden by ``mask``); the last one after the final norm, as ``forward`` gives it."""
    encoder = backbone.model.encoder
    x = frames
    blocked = torch.finfo(x.dtype).min
    bias = torch.where(mask, torch.zeros((), dtype=x.dtype), torch.full((), blocked, dtype=x.dtype))
    attention = bias[:, None, None, :].expand(-1, 1, x.shape[1], x.shape[1])
    states = []
    for layer in encoder.layers[cut:]:
        x = layer(x, attention)
        states.append(x)
    states[-1] = encoder.layer_norm(x)
    return states

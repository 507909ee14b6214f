"""Speech backbones: wav2vec2-style SSL models, and the encoders of S2T, SpeechT5 and Whisper.

Every clip is cropped to ``max_seconds``, turned into model input on its own (so per-clip
normalisation such as wav2vec2's zero-mean/unit-variance, S2T's utterance CMVN or Whisper's
log-mel ceiling sees only that clip) and zero-padded to the batch's longest clip, never to a
fixed 10 s or 30 s.

Padding must not change a clip's states. Attention masks handle the transformers; the
length-dependent front ends are the subtle part:

- wav2vec2-base, HuBERT-base, WavLM-base and SEW-small normalise their first CNN layer with a
  GroupNorm over *time*, so zero padding shifts every frame of a shorter clip. Their CNN (the
  "feature encoder") therefore runs on each clip's real length and the frames are padded
  afterwards; the rest of the HF forward runs batched with the attention mask, which also
  zeroes padded frames before the convolutional position embedding. Official recipes pad these
  models without an attention mask; that makes a clip's features depend on its batch-mates.
  Measured on the tiny random models, a 0.375 s clip batched with a 1 s clip changes its
  mean-pooled vector by 14-22 % (relative L2) the official way and by 13-22 % with a mask but a
  batched CNN; the per-clip CNN leaves it unchanged to ~1e-7. Layer-norm CNNs
  (the large wav2vec2/XLSR/HuBERT/UniSpeech models) have no cross-time statistics and run batched.
- SEW squeezes frames in pairs; a trailing odd frame cannot form a pair alone, so its samples
  are dropped in preprocessing (at most one 20 ms frame), which keeps the squeezed windows of a
  padded batch identical to the single clip's.
- S2T's strided convolution subsampler runs per clip for the same reason (its second layer's
  window would read the first layer's non-zero outputs at padded positions).
- SpeechT5's speech prenet (GroupNorm CNN, convolutional and sinusoidal positions) runs per clip.
- Whisper: see ``emovox.backbones.whisper``.

Building a backbone of each speech family (which classes, which feature extractor) is
``emovox.backbones.speech``: the family modules import this one, never the other way round.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch import nn

from emovox.audio import SAMPLE_RATE
from emovox.backbones.base import Backbone, Encoded
from emovox.backbones.registry import BackboneSpec
from emovox.errors import AudioError, BackboneError

SSL_MODEL_CLASSES: dict[str, str] = {
    "wav2vec2": "Wav2Vec2Model",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "sew": "SEWModel",
    "unispeech": "UniSpeechModel",
}


# ---------------------------------------------------------------------------------------------
# helpers



def checked_clips(items: list, *, max_samples: int, min_samples: int, name: str) -> list[np.ndarray]:
    """A backbone's input checked once for every audio family: a non-empty list of finite 1-D 16 kHz float32
    arrays (tensors accepted), each cropped to ``max_samples`` and at least ``min_samples`` long, with an error
    naming the item and what is wrong."""
    if not isinstance(items, list) or not items:
        raise BackboneError("audio preprocess takes a non-empty list of 1-D 16 kHz float arrays")
    clips = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if not isinstance(item, np.ndarray) or item.ndim != 1:
            shape = getattr(item, "shape", type(item).__name__)
            raise AudioError(f"audio item {i} must be a 1-D array of 16 kHz samples, got {shape}")
        clip = np.asarray(item[:max_samples], dtype=np.float32)
        if clip.size < min_samples:
            raise AudioError(
                f"audio item {i} has {item.size} samples ({item.size / SAMPLE_RATE * 1000:.1f} ms); "
                f"'{name}' needs at least {min_samples} samples at 16 kHz"
            )
        if not np.isfinite(clip).all():
            raise AudioError(f"audio item {i} holds NaN or infinite samples")
        clips.append(clip)
    return clips

class PerClip(nn.Module):
    """Runs a length-dependent front end on each clip's real length, then zero-pads the outputs."""

    def __init__(self, inner: nn.Module, lengths: torch.Tensor, in_dim: int, out_dim: int):
        super().__init__()
        self.inner = inner
        self.lengths = [int(n) for n in lengths]
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.inner(x[i : i + 1].narrow(self.in_dim, 0, n)) for i, n in enumerate(self.lengths)]
        longest = max(o.shape[self.out_dim] for o in outs)
        return torch.cat([pad_dim(o, self.out_dim, longest) for o in outs], dim=0)


def pad_dim(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    extra = size - x.shape[dim]
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, extra]
    return nn.functional.pad(x, pad)


#: Serialises the swap below across threads (a served model may be called concurrently): a
#: module-level lock, so backbones stay deep-copyable and picklable.
_SWAP_LOCK = threading.RLock()


@contextmanager
def swapped(parent: nn.Module, attr: str, replacement: nn.Module):
    """Temporarily replace a submodule for one forward; always restored, weights untouched."""
    with _SWAP_LOCK:
        original = getattr(parent, attr)
        setattr(parent, attr, replacement)
        try:
            yield
        finally:
            setattr(parent, attr, original)


@contextmanager
def truncated_encoder(encoder: nn.Module, layers: int, *, final_norm: str | None = None):
    """Run only ``encoder.layers[:layers]``, and without the norm named ``final_norm`` (an encoder's norm
    of its last output, which a state below the last never gets); both restored afterwards."""
    with _SWAP_LOCK:
        original = encoder.layers
        norm = getattr(encoder, final_norm) if final_norm else None
        encoder.layers = nn.ModuleList(list(original)[:layers])
        if final_norm:
            setattr(encoder, final_norm, nn.Identity())
        try:
            yield
        finally:
            encoder.layers = original
            if final_norm:
                setattr(encoder, final_norm, norm)


def _install_state_hooks(model) -> None:
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # a transformers that collects hidden states in its layer loop: nothing to install
        return
    if getattr(type(model), "_can_record_outputs", None):
        maybe_install_capturing_hooks(model)


def conv_min_samples(frames: int, kernels, strides) -> int:
    """Fewest samples a stack of unpadded 1-D convolutions needs to output ``frames`` frames."""
    n = frames
    for k, s in zip(reversed(list(kernels)), reversed(list(strides)), strict=True):
        n = (n - 1) * s + k
    return n


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lengths.device).unsqueeze(0) < lengths.to(torch.long).unsqueeze(1)


def stack_time_major(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``[T_i, ...]`` arrays along time: ``[B, T, ...]`` float32 and a ``[B, T]`` mask."""
    longest = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), longest, *arrays[0].shape[1:]), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    lengths = torch.tensor([a.shape[0] for a in arrays])
    return torch.from_numpy(out), length_mask(lengths, longest).to(torch.long)


# ---------------------------------------------------------------------------------------------
# the shared audio backbone


class AudioBackbone(Backbone):
    """Crops, validates and featurises clips one by one; subclasses define the model part."""

    def __init__(self, spec: BackboneSpec, model, feature_extractor, *, max_tokens: int, max_seconds: float,
                 hidden_size: int, num_layers: int, min_samples: int):
        super().__init__(spec, model, feature_extractor, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=hidden_size, num_layers=num_layers)
        self.max_samples = int(round(max_seconds * SAMPLE_RATE))
        self.min_samples = int(min_samples)
        if self.max_samples < self.min_samples:
            raise BackboneError(
                f"max_seconds={max_seconds} is shorter than the {self.min_samples / SAMPLE_RATE:.3f} s "
                f"'{spec.name}' needs for one frame"
            )

    @property
    def feature_extractor(self):
        return self.processor

    def _clips(self, items: list) -> list[np.ndarray]:
        return checked_clips(items, max_samples=self.max_samples, min_samples=self.min_samples, name=self.spec.name)


# ---------------------------------------------------------------------------------------------
# wav2vec2 family


class SSLBackbone(AudioBackbone):
    """wav2vec2, HuBERT, WavLM, SEW, UniSpeech: CNN feature encoder + transformer on raw audio."""

    def __init__(self, spec: BackboneSpec, model, feature_extractor, *, max_tokens: int, max_seconds: float):
        config = model.config
        squeeze = int(getattr(config, "squeeze_factor", 1)) if spec.family == "sew" else 1
        super().__init__(spec, model, feature_extractor, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=config.hidden_size, num_layers=config.num_hidden_layers + 1,
                         min_samples=conv_min_samples(squeeze, config.conv_kernel, config.conv_stride))
        self.squeeze = squeeze
        self.per_clip_cnn = config.feat_extract_norm == "group"

    def _frames(self, samples: torch.Tensor | int):
        return self.model._get_feat_extract_output_lengths(samples)

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        values = []
        for clip in self._clips(items):
            if self.squeeze > 1:  # whole squeeze windows only (see module docstring)
                frames = int(self._frames(clip.size))
                keep = conv_min_samples(frames - frames % self.squeeze, self.model.config.conv_kernel,
                                        self.model.config.conv_stride)
                clip = clip[:keep]
            values.append(self.feature_extractor(clip, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0])
        input_values, mask = stack_time_major(values)
        return {"input_values": input_values, "attention_mask": mask}

    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:
        values, attention = inputs["input_values"], inputs["attention_mask"]
        lengths = attention.sum(dim=-1)
        swap = (swapped(self.model, "feature_extractor", PerClip(self.model.feature_extractor, lengths, 1, 2))
                if self.per_clip_cnn else nullcontext())
        with swap, warnings.catch_warnings():
            # WavLM hands torch a bool key mask with a float position bias; torch warns per layer.
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            out = self.model(values, attention_mask=attention, output_hidden_states=all_layers)
        frames = self._frames(lengths)
        if all_layers:
            states = list(out.hidden_states)
            if states[-1].shape == out.last_hidden_state.shape:
                # Pre-norm ("stable layer norm") encoders record the last layer before their final
                # LayerNorm; the last entry is the model's output, as for every other family.
                states[-1] = out.last_hidden_state
            hidden = torch.stack(states)
            if hidden.shape[2] != out.last_hidden_state.shape[1]:
                # SEW's layers run on squeezed frames (the output is upsampled afterwards): the
                # all-layer view stays at that rate, its mask with it.
                frames = frames // self.squeeze
        else:
            hidden = out.last_hidden_state
        return Encoded(hidden=hidden, mask=length_mask(frames, hidden.shape[-2]))

    def stop_after(self, top: int | None):
        """Only the layers below hidden state ``top`` run (not SEW, whose states are at another rate); a
        pre-norm ("stable layer norm") encoder's final norm belongs to its last state only and is skipped."""
        if top is None or top >= self.num_layers - 1 or self.spec.family == "sew":
            return nullcontext()
        stable = bool(getattr(self.model.config, "do_stable_layer_norm", False))
        # transformers records hidden states with hooks on the layers, installed on the layers present at the first
        # call that asks for them: install them on every layer before a shorter stack hides some (else a later call
        # with all layers records too few states); and at least one layer must run to record any
        _install_state_hooks(self.model)
        return truncated_encoder(self.model.encoder, max(top, 1), final_norm="layer_norm" if stable else None)

    def freeze_feature_encoder(self) -> None:
        # transformers gives freeze_feature_encoder to Wav2Vec2Model but not to HubertModel or UniSpeechModel (only
        # to their task heads); every base model of the family has the CNN itself, which is what is frozen
        self.model.feature_extractor._freeze_parameters()

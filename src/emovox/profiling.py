"""Trainable parameters and GFLOPs per utterance of every registry backbone, offline.

Each backbone is rebuilt from the hyperparameters stored in
``emovox.backbones.architectures`` inside a ``FakeTensorMode``: parameters and activations
carry shapes but no memory, so even a 1-billion-parameter model is "run" in well under a
second and nothing is downloaded. One forward pass on one dummy utterance (100 tokens, or
10 s of 16 kHz audio) goes through ``torch.utils.flop_counter.FlopCounterMode``.

GFLOPs follow the convention of fvcore, the counter the IEMOCAP paper used for its Table 1,
so that the two are comparable:

* one multiply-add is one FLOP (``FlopCounterMode`` counts two, so its totals are halved);
* only matrix products (``mm``/``addmm``/``bmm``, which is what ``linear``, ``matmul`` and
  ``einsum`` lower to) and convolutions count, plus fvcore's rough 5 FLOPs per element of an
  affine layer/group norm (4 without affine) and 1-2 per element of an inference batch norm;
  element-wise ops, softmax and RMS norms count zero;
* ``baddbmm`` counts zero: fvcore has no formula for it;
* a fused ``scaled_dot_product_attention`` counts zero: fvcore's trace sees it as one
  operator without a formula. Whether a backbone's attention is fused therefore changes its
  count by ~2 % (text, 100 tokens) to ~10 % (audio, 10 s); ``Architecture.attention`` records
  which way the paper's run went, and ``"sdpa"`` attention is made opaque here
  (``_fused_attention``).

Trainable parameters are those with ``requires_grad``: Whisper's frozen sinusoidal position
table does not count, as in the paper (Speech2Text and SpeechT5 keep theirs as buffers).

Size on disk (the RAVDESS paper's Table 6) is what a safetensors file of the backbone's
``state_dict`` holds in fp32: every parameter (trainable or not, tied ones once) and every
persistent buffer, floating-point tensors at 4 bytes per element and integer buffers at their
own width, in MB of 10^6 bytes. The file's JSON header (names, shapes, offsets; a few KB)
is left out. Whisper is counted with its full 30 s position table, as it is saved.

Backbones without learned weights (openSMILE functionals) have 0 parameters and nothing on disk;
their cost is signal processing in openSMILE's C++ (FFTs, pitch tracking, statistics), not matrix
products a FLOP counter could see, so their GFLOPs are not counted (``None``) and the row says so.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any

from emovox.audio import SAMPLE_RATE
from emovox.backbones.architectures import ARCHITECTURES, PAPER_TABLE1, PAPER_TABLE6_MB, Architecture
from emovox.errors import BackboneError

#: The paper's fixed utterance: 100 tokens of text or 10 s of audio (IEMOCAP paper, section 3.2).
DEFAULT_TOKENS = 100
DEFAULT_SECONDS = 10.0
#: Shorter audio leaves the convolutional front ends of some backbones without a frame.
MIN_SECONDS = 0.1
# Speech2Text's Kaldi filterbank: 25 ms windows every 10 ms, no padding at the edges.
_FBANK_WINDOW, _FBANK_HOP = 400, 160
# Whisper's log-mel spectrogram: one frame per 10 ms (the last, partial frame is dropped).
_MEL_HOP = 160


@dataclass(frozen=True)
class ProfileRow:
    """One backbone's size and cost, beside the paper's Table 1 values where it has them."""

    name: str
    hub_id: str
    modality: str
    params_m: float
    gflops: float | None
    paper_params_m: float | None = None
    paper_gflops: float | None = None
    #: fp32 safetensors data of the backbone's state dict, MB (10^6 bytes)
    size_mb: float | None = None
    paper_size_mb: float | None = None
    #: why a figure is missing (a backbone without learned weights has no GFLOPs to count)
    note: str | None = None

    @property
    def params_diff(self) -> float | None:
        """Relative difference to the paper's parameter count (0.01 = 1 %), if it has one."""
        return _relative(self.params_m, self.paper_params_m)

    @property
    def gflops_diff(self) -> float | None:
        """Relative difference to the paper's GFLOPs, if it has one."""
        return None if self.gflops is None else _relative(self.gflops, self.paper_gflops)

    @property
    def size_diff(self) -> float | None:
        """Relative difference to the RAVDESS paper's size on disk (Table 6), if it has one."""
        return None if self.size_mb is None else _relative(self.size_mb, self.paper_size_mb)


def _relative(ours: float, paper: float | None) -> float | None:
    return None if paper is None else (ours - paper) / paper


def profile_backbone(name: str, *, tokens: int = DEFAULT_TOKENS, seconds: float = DEFAULT_SECONDS) -> ProfileRow:
    """Parameters (millions) and GFLOPs of one registry backbone on one utterance.

    ``tokens`` is the text length, ``seconds`` the audio duration; the defaults are the
    paper's. Results are cached per process.
    """
    if tokens < 1 or seconds < MIN_SECONDS:
        raise BackboneError(
            f"profile needs at least 1 token and {MIN_SECONDS} s of audio, got tokens={tokens}, seconds={seconds}"
        )
    return _profile_cached(name, int(tokens), float(seconds))


def profile_all(
    names: Iterable[str] | None = None,
    *,
    tokens: int = DEFAULT_TOKENS,
    seconds: float = DEFAULT_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> list[ProfileRow]:
    """Profile ``names`` (default: every registry backbone, in registry order).

    ``progress`` is called with each name before it is profiled (for a status line).
    """
    rows = []
    for name in list(_registry()) if names is None else list(names):
        if progress is not None:
            progress(name)
        rows.append(profile_backbone(name, tokens=tokens, seconds=seconds))
    return rows


@functools.cache
def _profile_cached(name: str, tokens: int, seconds: float) -> ProfileRow:
    registry = _registry()
    if name not in registry:
        raise BackboneError(
            f"unknown backbone '{name}' for profiling; registry names: {', '.join(sorted(registry))}"
        )
    spec = registry[name]
    if not _learned(spec):
        return ProfileRow(
            name=name, hub_id=spec.hub_id, modality=spec.modality, params_m=0.0, gflops=None, size_mb=0.0,
            note=f"{name}: fixed features ({spec.hub_id}), no learned weights; GFLOPs not counted (signal "
            "processing, not matrix products)",
        )
    if name not in ARCHITECTURES:
        raise BackboneError(
            f"backbone '{name}' has no stored architecture in emovox/backbones/architectures.py; "
            "add its config.json hyperparameters there to profile it"
        )
    params, flops = count_params_and_flops(ARCHITECTURES[name], tokens=tokens, seconds=seconds)
    size = count_weight_bytes(ARCHITECTURES[name])
    paper = PAPER_TABLE1.get(name)
    return ProfileRow(
        name=name,
        hub_id=spec.hub_id,
        modality=spec.modality,
        params_m=params / 1e6,
        gflops=flops / 1e9,
        paper_params_m=paper.params_m if paper else None,
        paper_gflops=paper.gflops if paper else None,
        size_mb=size / 1e6,
        paper_size_mb=PAPER_TABLE6_MB.get(name),
    )


def _learned(spec: Any) -> bool:
    from emovox.backbones.registry import FAMILIES

    return FAMILIES[spec.family].learned


def _registry() -> Mapping[str, Any]:
    from emovox.backbones.registry import REGISTRY

    return REGISTRY


# --------------------------------------------------------------------------- counting


def count_params_and_flops(
    arch: Architecture, *, tokens: int = DEFAULT_TOKENS, seconds: float = DEFAULT_SECONDS
) -> tuple[int, int]:
    """(trainable parameters, fvcore-convention FLOPs) of one forward pass of ``arch``."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode(), torch.no_grad():
        model, config = build_architecture(arch, seconds=seconds)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        inputs = _dummy_inputs(arch, config, tokens=tokens, seconds=seconds)
        counter = FlopCounterMode(display=False, custom_mapping=_fvcore_extra())
        with counter, _fused_attention() if arch.attention == "sdpa" else contextlib.nullcontext():
            model(**inputs)
    return params, counter.get_total_flops() // 2


def count_weight_bytes(arch: Architecture) -> int:
    """Bytes of tensor data in an fp32 safetensors file of ``arch``'s state dict (header excluded)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), torch.no_grad():
        model, _ = build_architecture(arch, seconds=None)
        return state_dict_bytes(model)


def state_dict_bytes(module: Any) -> int:
    """Bytes of ``module``'s state dict saved in fp32: floats at 4 bytes, integers at their width.

    Tensors shared between names (tied embeddings) count once, as safetensors stores them once.
    Works on fake tensors, so a model of any size is measured without its memory.
    """
    seen: set[int] = set()
    total = 0
    for tensor in module.state_dict(keep_vars=True).values():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * (4 if tensor.is_floating_point() else tensor.element_size())
    return total


def build_architecture(arch: Architecture, *, seconds: float | None = DEFAULT_SECONDS) -> tuple[Any, Any]:
    """The profiled module of ``arch``, its weights left uninitialised, in eval mode, and its config.

    Called inside ``FakeTensorMode``, so the weights take no memory. Nothing reads their values (FLOPs and
    sizes only), so transformers' weight initialisation is skipped: it was 30 % of profiling every backbone.

    Whisper's encoder only accepts inputs as long as its position table; as in the paper,
    the table is cut to the utterance (10 s = 500 positions) instead of padding to 30 s.
    ``seconds=None`` keeps the full table (the model as it is saved).
    """
    import transformers

    config = getattr(transformers, arch.config_class)(**arch.config)
    if arch.inputs == "log_mel" and seconds is not None:
        config.max_source_positions = max(1, round(seconds * SAMPLE_RATE) // _MEL_HOP // 2)
    model_class = getattr(transformers, arch.model_class)
    use_sdpa = arch.attention == "sdpa" and getattr(model_class, "_supports_sdpa", False)
    config._attn_implementation = "sdpa" if use_sdpa else "eager"
    with _no_weight_init():
        model = model_class(config)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # skipped with the initialisation; tied embeddings are one set of parameters
    for attribute in filter(None, arch.part.split(".")):
        model = getattr(model, attribute)
    return model.eval(), config


def _no_weight_init() -> contextlib.AbstractContextManager:
    """transformers' ``no_init_weights`` (``transformers.initialization`` from 5.0, ``modeling_utils`` before)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def _dummy_inputs(arch: Architecture, config: Any, *, tokens: int, seconds: float) -> dict[str, Any]:
    """One utterance of the requested length in the form ``arch.model_class`` takes."""
    import torch

    samples = round(seconds * SAMPLE_RATE)
    if arch.inputs == "tokens":
        return {"input_ids": torch.zeros(1, tokens, dtype=torch.long)}
    if arch.inputs == "waveform":
        return {"input_values": torch.zeros(1, samples)}
    if arch.inputs == "fbank":
        frames = 1 + (samples - _FBANK_WINDOW) // _FBANK_HOP
        return {"input_features": torch.zeros(1, frames, config.input_feat_per_channel * config.input_channels)}
    if arch.inputs == "log_mel":
        # Exactly as many frames as the (cut) position table takes: 2 per position.
        return {"input_features": torch.zeros(1, config.num_mel_bins, 2 * config.max_source_positions)}
    raise AssertionError(f"unknown input kind {arch.inputs!r}")


# fvcore's formulas for the ops FlopCounterMode does not count (in FlopCounterMode's unit of
# 2 per multiply-add, so the final halving leaves fvcore's value), and zero for baddbmm,
# which fvcore cannot count either. fvcore: jit_handles.norm_flop_counter / batchnorm_flop_jit.
def _norm(weight_index: int) -> Callable[..., int]:
    def flops(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        affine = args[weight_index] is not None
        return 2 * prod(args[0]) * (5 if affine else 4)

    return flops


def _batch_norm_inference(input_shape: Any, weight_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * prod(input_shape) * (2 if weight_shape is not None else 1)


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _fvcore_extra() -> dict[Any, Callable[..., int]]:
    import torch

    aten = torch.ops.aten
    return {
        aten.native_layer_norm: _norm(2),  # (input, normalized_shape, weight, bias, eps)
        aten.native_group_norm: _norm(1),  # (input, weight, bias, N, C, HxW, group, eps)
        aten._native_batch_norm_legit_no_training: _batch_norm_inference,
        aten.baddbmm: _zero,
    }


def _fused_attention() -> Any:
    """A torch-function mode that treats attention the way fvcore saw it when it ran fused.

    ``F.scaled_dot_product_attention`` becomes one opaque op: it returns an empty tensor of
    the right shape, so none of its matrix products reach the counter.
    ``F.multi_head_attention_forward`` (WavLM) is asked not to return attention weights, which
    sends it to ``scaled_dot_product_attention`` (older transformers versions asked for weights
    only when the caller did). A mode does not see the calls made inside a function it
    intercepts, so for that nested call the module attribute is swapped while it runs.
    """
    from unittest import mock

    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    need_weights_at = list(inspect.signature(F.multi_head_attention_forward).parameters).index("need_weights")

    def opaque_sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        return query.new_empty((*query.shape[:-1], value.shape[-1]))

    class FusedAttention(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = dict(kwargs or {})
            if func is F.scaled_dot_product_attention:
                return opaque_sdpa(*args, **kwargs)
            if func is F.multi_head_attention_forward:
                if len(args) > need_weights_at:
                    args = (*args[:need_weights_at], False, *args[need_weights_at + 1:])
                else:
                    kwargs["need_weights"] = False
                with mock.patch.object(F, "scaled_dot_product_attention", opaque_sdpa):
                    return func(*args, **kwargs)
            return func(*args, **kwargs)

    return FusedAttention()

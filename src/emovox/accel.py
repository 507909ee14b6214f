"""Faster CPU paths for emovox models: fp32 on oneDNN, bf16, dynamic int8.

A Whisper/wav2vec2 backbone spends nearly all its time in the ``nn.Linear`` layers of its
transformer, so that is where the paths differ:

- fp32: torch sends float32 linears to MKL's sgemm, which on AMD CPUs runs a generic AVX2
  kernel; oneDNN (inside torch already, for convolutions and bf16) runs the same float32 product
  with AVX-512. Only the summation order differs (pooled Whisper-base features move by ~3e-5).
  ``onednn_linears`` switches a model's linears for a block of code, forward and backward; the
  feature extraction and the trainer use it.
- bf16 (CPUs with native ``avx512_bf16``/AMX only): weights in bfloat16; pooled features move a
  little (under 3 % relative L2, checked by the tests).
- int8: ``torch.ao`` dynamic quantisation of every ``nn.Linear`` (int8 weights, activations
  quantised per batch); Whisper's deeper layers have activation outliers, so pooled features move
  by about ten times more than bf16's (under 25 %, checked). Use it where a small accuracy cost buys
  latency.

How much faster each path is depends on the CPU: ``benchmarks/README.md`` has the measured
figures and the commands that produced them. bf16 and int8 change the numbers, so
``tests/test_speed.py`` bounds their distance to fp32 on real Whisper-base features and
``benchmarks/speed.py`` reports it beside the speed.

``optimize_for_inference`` returns a copy that keeps its class and methods (a backbone still has
``preprocess``, ``spec``, ``num_layers``; a classifier still returns logits): bf16 adds hooks that
cast floating inputs to bf16 and floating outputs back to float32, so callers, pooling and
metrics keep working in float32. The original model is never modified. ONNX Runtime, the other
inference path, is a recognizer's runtime (``emovox.inference.export`` writes it, ``emovox.inference`` runs it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from emovox.errors import EmovoxError

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")

#: CPU flags that mean bfloat16 matrix products run natively rather than emulated.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class AccelError(EmovoxError):
    """An inference precision was asked for that this machine or model cannot run."""


# --- what the CPU can do ------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_extract_precision(precision: str) -> str:
    """``train.extract_precision`` as run on this machine: ``auto`` is bf16 where bf16 is native
    (there it is faster and, on EmoDB's main recipe, gave the same choices and scores), else fp32."""
    if precision == "auto":
        return "bf16" if bf16_support()[0] else "fp32"
    return precision


@functools.lru_cache(maxsize=1)
def bf16_support() -> tuple[bool, str]:
    """``(supported, why)``: native bf16 dot products, and a bf16 matmul that actually runs.

    ``torch.backends.cpu.get_cpu_capability()`` names the widest vector ISA torch dispatches to
    (e.g. ``AVX512``) but not whether bf16 products are native; oneDNN (used by torch for bf16
    matmuls) emulates them on plain AVX-512, which is slower than fp32. So this needs a native
    flag (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``, or torch's own mkldnn bf16
    check off Linux/x86) and a probe: a small bf16 matmul must run and agree with fp32.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _cpu_flags()
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    if flags and not native:
        return (
            False,
            f"the CPU has no native bfloat16 instructions ({' or '.join(NATIVE_BF16_FLAGS)}); torch capability {capability}",
        )
    if not flags:  # no /proc/cpuinfo (macOS, Windows): trust torch's oneDNN check
        try:
            if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return False, f"torch reports no bf16 support on this CPU (capability {capability})"
        except (AttributeError, RuntimeError):
            return False, f"torch cannot tell whether this CPU supports bf16 (capability {capability})"
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
        got = (a.bfloat16() @ b.bfloat16()).float()
        if not torch.allclose(got, a @ b, rtol=0.05, atol=0.5):
            return False, "a bf16 matmul probe disagreed with fp32"
    except RuntimeError as exc:
        return False, f"a bf16 matmul probe failed ({exc})"
    return True, f"native {', '.join(native) or 'bf16 (oneDNN)'}; torch capability {capability}"


def check_precision(precision: str) -> None:
    """Raise ``AccelError`` unless ``precision`` is known and runs on this machine."""
    if precision not in PRECISIONS:
        raise AccelError(f"unknown inference precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        ok, why = bf16_support()
        if not ok:
            raise AccelError(f"precision 'bf16' is not available here: {why}. Use precision 'fp32' or 'int8' instead")
    if precision == "int8":
        engines = torch.backends.quantized.supported_engines
        if not any(e in engines for e in ("x86", "fbgemm", "onednn", "qnnpack")):
            raise AccelError(f"precision 'int8' needs a quantized engine; this torch build has {engines}. Use 'fp32'")


# --- fp32 on oneDNN ---------------------------------------------------------------------------------


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # The op torch's own compiler (inductor) lowers CPU linears to; it takes ordinary dense tensors.
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """Linear with its forward and both backward products on oneDNN (float32 throughout).

    ``grad_x = grad @ W`` is a linear with weight ``W^T``; ``grad_W = grad^T @ x`` is a linear of
    ``grad^T`` with "weight" ``x^T``; ``grad_b`` sums ``grad`` over every leading dimension.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):  # x: [N, in]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = _onednn_linear(x, weight, bias)
        # a view cannot leave a custom Function if anyone will modify it in place (wav2vec2's
        # SpecAugment writes into the projected features); reshaping happens outside instead
        return out.clone() if out._is_view() else out

    @staticmethod
    def backward(ctx, grad):  # grad: [N, out]
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, weight.t().contiguous(), None)
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_linear(grad.t().contiguous(), x.t().contiguous(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def _onednn_linear_autograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    flat = _OneDNNLinearFunction.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return flat.view(*x.shape[:-1], weight.shape[0])


@functools.lru_cache(maxsize=1)
def onednn_linear_available() -> bool:
    """True when torch has oneDNN's float32 linear and it matches ``F.linear``, values and
    gradients, on a probe (with and without bias, on a non-contiguous input)."""
    # the probe runs its own forward and backward, whatever mode the first caller is in (the
    # answer is cached for the process: a probe failing under inference_mode would stick)
    with torch.inference_mode(False), torch.enable_grad():
        return _probe_onednn_linear()


def _probe_onednn_linear() -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 64, 5, generator=g).transpose(1, 2)  # [3, 5, 64], not contiguous
        w, b = torch.randn(32, 64, generator=g), torch.randn(32, generator=g)
        close = functools.partial(torch.allclose, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            if not (close(_onednn_linear(x, w, b), nn.functional.linear(x, w, b))
                    and close(_onednn_linear(x, w, None), nn.functional.linear(x, w))):
                return False
        grads = []
        for fn in (_onednn_linear_autograd, nn.functional.linear):
            xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
            (fn(xs, ws, bs) ** 2).sum().backward()
            grads.append((xs.grad, ws.grad, bs.grad))
        return all(close(a, c) for a, c in zip(*grads, strict=True))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def onednn_enabled() -> bool:
    """oneDNN linears are used unless ``EMOVOX_ONEDNN=0`` (an escape hatch, and how the speed
    benchmark measures what they contribute)."""
    return os.environ.get("EMOVOX_ONEDNN", "1") != "0" and onednn_linear_available()


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU products run on oneDNN (see module docstring), forward and,
    when gradients are needed, backward. Same parameters, same ``state_dict``; other dtypes and
    devices run ``nn.Linear.forward`` unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.device.type == "cpu"
            and x.dim() >= 2
            and onednn_enabled()
        ):
            return super().forward(x)
        bias = self.bias
        if torch.is_grad_enabled() and (
            x.requires_grad or self.weight.requires_grad or (bias is not None and bias.requires_grad)
        ):
            return _onednn_linear_autograd(x, self.weight, bias)
        return _onednn_linear(x, self.weight, bias)


def _plain_linears(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) is nn.Linear]  # exact type: never a quantised or custom subclass


@contextmanager
def onednn_linears(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s plain ``nn.Linear`` layers run as ``OneDNNLinear``.

    Nothing is copied: the modules' class is switched and switched back on exit, so the weights,
    hooks and ``state_dict`` stay exactly as they are. A no-op when oneDNN is unavailable.
    """
    linears = _plain_linears(model) if onednn_enabled() else []
    for m in linears:
        m.__class__ = OneDNNLinear
    try:
        yield model
    finally:
        for m in linears:
            m.__class__ = nn.Linear


# --- casting hooks for bf16 -----------------------------------------------------------------------


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """Cast every floating tensor inside ``value`` (tensors, dicts, lists, tuples, dataclasses)."""
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, dict):
        return type(value)((k, _cast_floats(v, dtype)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _cast_floats(getattr(value, f.name), dtype) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def _inputs_to_bf16(module, args, kwargs):
    return _cast_floats(args, torch.bfloat16), _cast_floats(kwargs, torch.bfloat16)


def _outputs_to_fp32(module, args, kwargs, output):
    return _cast_floats(output, torch.float32)


# --- the public entry point --------------------------------------------------------------------


def optimize_for_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """A copy of ``model`` in eval mode, set up to run in ``precision`` on the CPU.

    - ``fp32``: the reference numbers; linears run on oneDNN when it is available (float32
      throughout, only the summation order differs from MKL's).
    - ``bf16``: weights in bfloat16, floating inputs cast to bf16 on the way in and outputs back to
      float32 on the way out; raises ``AccelError`` when the CPU has no native bf16.
    - ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights,
      activations quantised per batch); convolutions, norms and embeddings stay float32.

    The copy records its precision in ``inference_precision`` (the feature cache keys on it, so
    bf16/int8 features never mix with fp32 ones). Call it under ``torch.inference_mode()``.
    """
    check_precision(precision)
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    if precision == "fp32" and onednn_enabled():
        for m in _plain_linears(out):
            m.__class__ = OneDNNLinear
    elif precision == "bf16":
        out.to(torch.bfloat16)
        out.register_forward_pre_hook(_inputs_to_bf16, with_kwargs=True)
        out.register_forward_hook(_outputs_to_fp32, with_kwargs=True)
    elif precision == "int8":
        with warnings.catch_warnings():  # torch.ao's notices that eager quantisation moves to torchao
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            out = torch.ao.quantization.quantize_dynamic(out, {nn.Linear}, dtype=torch.qint8, inplace=True)
    out.inference_precision = precision
    return out


# --- threads ------------------------------------------------------------------------------------


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with ``threads`` intra-op threads, restoring the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- how many threads ------------------------------------------------------------------------------------------------
#: Below this many parameters a model's ops are too small to split across threads: the fork/join
#: of every op costs more than the op, and on a busy machine every op waits for a descheduled
#: sibling thread (measured under load: 10 ms per step of the EmoDB linear head on 2 threads,
#: 0.6-0.9 ms on one; the whole frozen LOSO run went from 360 s to 32 s).
SMALL_MODEL_PARAMETERS = 2_000_000


def compute_threads(model: nn.Module, requested: int | None) -> int | None:
    """Intra-op threads for training/predicting ``model``: ``requested`` if set, 1 for small models,
    else ``None`` (leave torch's setting, i.e. every core ``set_threads`` gave it). A model kind
    counts only what runs in a step (``compute_size``: a cached frozen backbone does not)."""
    if requested is not None:
        return int(requested)
    size = model.compute_size() if hasattr(model, "compute_size") else sum(p.numel() for p in model.parameters())
    if size < SMALL_MODEL_PARAMETERS:
        return 1
    return None


def set_threads(threads: int | None) -> None:
    """Use every core we were given (2 here): torch defaults can under- or over-subscribe."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(threads)))


@contextmanager
def fast_compute(model: nn.Module, requested: int | None):
    """Run ``model`` with the intra-op threads ``compute_threads`` picks and float32 linears on oneDNN
    (``onednn_linears``: ~1.8x per fine-tuning step on AMD CPUs, where torch's default MKL sgemm runs without
    AVX-512), restoring both afterwards."""
    threads = compute_threads(model, requested)
    same = threads is None or threads == torch.get_num_threads()
    with contextlib.nullcontext() if same else torch_threads(threads), onednn_linears(model):
        yield

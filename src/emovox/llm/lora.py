"""LoRA adapters (peft) on a causal LM: configuration, attachment, saving beside a recognizer.

The paper adapts Gemma-2B and Qwen-Audio with LoRA (h = W0 x + (alpha / r) dW x) and searches
rank x alpha on validation folds (best: r = alpha = 128 for Gemma, r = 64 / alpha = 1024 for
Qwen-Audio). The defaults here are sized for a CPU (r = 8 on the attention's query and value
projections, alpha = r as the paper found best); every field is configurable.

Adapters are written by peft's own ``save_pretrained`` (``adapter_model.safetensors`` and
``adapter_config.json``), so they load with plain peft too; the base model is never copied
into them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from emovox.errors import LLMError, RecognizerError


class LoRAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, gt=0, description="LoRA rank r.")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | str = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Module names (or one regex over full module paths) that get adapters.",
    )


def add_lora(model, cfg: LoRAConfig, *, seed: int = 0):
    """``model`` wrapped by peft with fresh adapters (only they train); their init is seeded."""
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                wrapped = get_peft_model(model, peft_cfg)
        except ValueError as exc:  # no module matched target_modules
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise LLMError(
                f"LoRA target_modules {cfg.target_modules!r} match no layer of {type(model).__name__} ({exc}); "
                f"its linear layers are named {', '.join(names)}"
            ) from None
    return wrapped


def save_adapter(peft_model, directory: Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(directory), safe_serialization=True)
    for stale in directory.glob("*.bin"):
        stale.unlink()


def load_adapter(model, directory: Path, *, trainable: bool = False):
    """``model`` with the adapters saved in ``directory``, read from safetensors only.

    The adapter is rebuilt from its ``adapter_config.json`` and filled with peft's own
    ``set_peft_model_state_dict``; ``PeftModel.from_pretrained`` is not used because it falls back
    to unpickling ``adapter_model.bin`` when the safetensors file is missing.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    weights = directory / "adapter_model.safetensors"
    pickles = sorted(p.name for p in directory.glob("*") if p.suffix.lower() in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if pickles:
        raise RecognizerError(f"{directory}: holds pickled weights {pickles}; emovox never loads pickles (they can run code)")
    if not weights.is_file() or not (directory / "adapter_config.json").is_file():
        raise RecognizerError(f"{directory}: no adapter_model.safetensors and adapter_config.json (LoRA adapter missing)")
    try:
        config = LoraConfig.from_pretrained(str(directory))
        tensors = load_file(str(weights))
    except Exception as exc:  # damaged JSON or safetensors
        raise RecognizerError(f"{directory}: unreadable LoRA adapter ({type(exc).__name__}: {exc})") from None
    config.inference_mode = not trainable
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = get_peft_model(model, config)
    result = set_peft_model_state_dict(wrapped, tensors)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or missing:
        raise RecognizerError(
            f"{weights}: the adapter does not fit this base model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if not trainable:
        for p in wrapped.parameters():
            p.requires_grad_(False)
    return wrapped


def base_state_dict(model) -> dict[str, torch.Tensor]:
    """The base model's own weights from a peft-wrapped model: no adapter tensors, original names."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    state = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    return state


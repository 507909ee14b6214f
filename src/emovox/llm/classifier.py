"""``llm-classifier``: a causal LM that names the emotion, adapted with LoRA (the paper's text system).

The prompt (``emovox.llm.prompts``) asks for the speaker's emotion; the class distribution is
the softmax over the label words' first-token logits at the answer position (``logits``; the
paper's "logit selector"), and training is the paper's next-token cross-entropy on the label
word appended as the answer (``loss``), with LoRA adapters the only trainable weights. Paper
defaults: Adam, lr 1e-4, batch 4, 6 epochs, linear decay to 0 (``PAPER_TRAIN``; the generic
trainer's AdamW with ``weight_decay: 0`` is Adam; its learning rate is constant).

``mode: zero-shot`` trains nothing: ``logits`` still gives the logit-selector distribution
of the untouched model, and ``zero_shot_answers`` does what the paper did with Qwen-Audio:
generate a short free answer, map it to a label (``emovox.llm.answers``) and fall back to
``zero_shot.fallback`` (neutral) when nothing is recognisable, counting those answers.

Recognizer directory: ``adapters/llm/`` (peft safetensors), ``llm.json`` (base model source
and the label words' token ids, checked on load), and ``branches/llm/`` (the base model as a
safetensors HF directory) when ``save_base`` is set or the base is a tiny test model; by
default a real base model is referenced by its source, not copied (SmolLM2 would add 540 MB
per fold).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from emovox.errors import LLMError, RecognizerError
from emovox.llm.answers import AnswerParser, ZeroShotAnswers, map_answers
from emovox.llm.lora import LoRAConfig, add_lora, base_state_dict, load_adapter, save_adapter
from emovox.llm.prompts import PromptConfig
from emovox.llm.scoring import PromptEncoder, answer_loss_and_scores, append_answers, lm_logits, transcript
from emovox.models.base import WEIGHTS_FILE, KindConfig, ModelKind, check_tensors, read_weights

#: The paper's optimisation for the text system (section 4.2).
PAPER_TRAIN: dict[str, Any] = {"optimizer": "adam", "lr": 1e-4, "batch_size": 4, "max_epochs": 6,
                               "scheduler": "linear-to-zero", "weight_decay": 0.0}
LLM_FILE = "llm.json"


class ZeroShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(10, gt=0, description="Length of the generated free answer.")
    fallback: str = Field("neutral", description="Label for answers naming no recognisable emotion (paper: neutral).")


class LLMClassifierConfig(KindConfig):
    """``model.kind: llm-classifier``."""

    kind: Literal["llm-classifier"] = "llm-classifier"
    llm: str = Field(
        "smollm2-135m-instruct", description="Packaged GGUF name, .gguf file, model directory, hub id, or tiny:FAMILY."
    )
    gguf_file: str | None = Field(None, description="GGUF file inside the `llm` directory.")
    mode: Literal["lora", "zero-shot"] = "lora"
    lora: LoRAConfig = LoRAConfig()
    prompt: PromptConfig = PromptConfig()
    label_words: dict[str, str] = Field(default_factory=dict, description="Label -> word overrides.")
    max_text_tokens: int = Field(256, gt=0, description="Transcripts are cut to this many tokens.")
    zero_shot: ZeroShotConfig = ZeroShotConfig()
    save_base: bool = Field(False, description="Copy the base LLM into the recognizer directory (self-contained).")


def load_lm(source: str, gguf_file: str | None, seed: int):
    from emovox.backbones.llm import build_tiny_lm, load_causal_lm

    if source.startswith("tiny:"):
        return build_tiny_lm(source.split(":", 1)[1], seed=seed)
    return load_causal_lm(source, gguf_file=gguf_file)


def save_base_lm(peft_or_model, tokenizer, directory: Path) -> None:
    """The base LM (adapters stripped) and its tokenizer as a safetensors HF directory."""
    from emovox.backbones.base import QuietTransformers

    base = peft_or_model.get_base_model() if hasattr(peft_or_model, "get_base_model") else peft_or_model
    directory.mkdir(parents=True, exist_ok=True)
    with QuietTransformers():
        base.save_pretrained(str(directory), state_dict=base_state_dict(peft_or_model), safe_serialization=True)
        tokenizer.save_pretrained(str(directory))


def save_own_weights(model: ModelKind, directory: Path, extra: dict[str, torch.Tensor] | None = None) -> None:
    """``weights.safetensors``: the calibration temperature and whatever else the kind trains outside the LLM."""
    from emovox.atomic import atomic_save_tensors

    tensors = {"temperature": model.temperature.detach().reshape(())}
    tensors.update(extra or {})
    atomic_save_tensors(Path(directory) / WEIGHTS_FILE, tensors, metadata={"format": "pt"})


def load_own_weights(model: ModelKind, directory: Path, expected: dict[str, torch.Tensor] | None = None) -> dict:
    path = Path(directory) / WEIGHTS_FILE
    tensors = read_weights(path)
    check_tensors(path, tensors, {"temperature": model.temperature, **(expected or {})}, f"a {model.kind} model")
    with torch.no_grad():
        model.temperature.copy_(tensors.pop("temperature"))
    return tensors


class LLMClassifier(ModelKind):
    kind: ClassVar[str] = "llm-classifier"
    Config: ClassVar[type[KindConfig]] = LLMClassifierConfig
    PAPER_TRAIN: ClassVar[dict[str, Any]] = PAPER_TRAIN

    def __init__(self, config: LLMClassifierConfig, labels: Sequence[str], lm, *, seed: int = 0,
                 adapter_dir: Path | None = None):
        super().__init__(config, labels)
        self.seed = seed
        self.source, self.dequantized = lm.source, lm.dequantized
        self.tokenizer = lm.tokenizer
        self.encoder = PromptEncoder(lm.tokenizer, config.prompt, self.labels, overrides=config.label_words,
                                     max_text_tokens=config.max_text_tokens)
        if config.mode == "zero-shot" and config.zero_shot.fallback not in self.labels:
            raise LLMError(f"zero_shot.fallback '{config.zero_shot.fallback}' is not a label of {list(self.labels)}; set it")
        for p in lm.model.parameters():
            p.requires_grad_(False)
        if config.mode == "lora":
            self.lm = (load_adapter(lm.model, adapter_dir, trainable=True) if adapter_dir
                       else add_lora(lm.model, config.lora, seed=seed))
        else:
            self.lm = lm.model
        self.parser = AnswerParser(self.labels, {label: [w] for label, w in zip(self.labels, self.encoder.words, strict=True)})

    # -- the kind interface ----------------------------------------------------------------------
    @classmethod
    def build(cls, config: LLMClassifierConfig, labels: Sequence[str], *, seed: int = 0, backbones=None) -> LLMClassifier:
        return cls(config, labels, load_lm(config.llm, config.gguf_file, seed), seed=seed)

    def fields(self) -> set[str]:
        return {"text"}

    def collate(self, batch: list, *, augment: bool = False) -> dict:
        return self.encoder.batch([transcript(e) for e in batch])

    def logits(self, inputs: dict) -> torch.Tensor:
        """The label words' first-token logits at the answer position (the paper's logit selector)."""
        logits = lm_logits(self.lm, input_ids=inputs["input_ids"], mask=inputs["attention_mask"], keep=1)[:, -1]
        return logits[:, self.encoder.verbalizer.first_ids].float()

    def loss(self, inputs: dict, targets: torch.Tensor, weight: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token CE on the target's label word (paper); rows weighted by ``weight[target]`` if given.

        The returned logits are the calibrated class scores of the same forward pass.
        """
        answers = self.encoder.answers(targets.tolist())
        ids, mask = append_answers(inputs["input_ids"].cpu(), inputs["attention_mask"].cpu(), answers, self.encoder.pad_id)
        device = inputs["input_ids"].device
        logits = lm_logits(self.lm, input_ids=ids.to(device), mask=mask.to(device), keep=max(len(a) for a in answers) + 1)
        rows = weight.to(device)[targets.to(device)] if weight is not None else None
        loss, scores = answer_loss_and_scores(logits, answers, self.encoder.verbalizer.first_ids, rows)
        return loss, scores / self.temperature

    def fit_direct(self, train, valid) -> dict | None:
        """Zero-shot: nothing to fit (the model is used as it is); LoRA: the generic trainer."""
        return {"mode": "zero-shot", "fitted": "nothing"} if self.config.mode == "zero-shot" else None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "llm": self.source, "dequantized_gguf": self.dequantized, "mode": self.config.mode,
                "label_words": dict(zip(self.labels, self.encoder.words, strict=True)),
                "trains": "LoRA adapters" if self.config.mode == "lora" else "nothing"}

    # -- zero-shot -------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_answers(self, texts: Sequence[str], *, batch_size: int = 8) -> list[str]:
        out: list[str] = []
        device = next(self.lm.parameters()).device
        for start in range(0, len(texts), batch_size):
            batch = self.encoder.batch(list(texts[start:start + batch_size]))
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            generated = self.lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.config.zero_shot.max_new_tokens,
                                         do_sample=False, pad_token_id=self.encoder.pad_id)
            out += self.tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
        return [a.strip() for a in out]

    def zero_shot_answers(self, examples: Sequence, *, batch_size: int = 8) -> ZeroShotAnswers:
        """Generate, parse, fall back (paper); ``.predictions`` are label indices, ``.unparsed`` the fallbacks."""
        answers = self.generate_answers([transcript(e) for e in examples], batch_size=batch_size)
        return map_answers(answers, self.parser, self.config.zero_shot.fallback)

    # -- persistence -----------------------------------------------------------------------------
    def _sidecar(self) -> dict:
        return {"format": 1, "kind": self.kind, "source": self.source, "dequantized": self.dequantized,
                "chat": self.encoder.chat, "verbalizer": self.encoder.verbalizer.to_dict()}

    def save(self, directory: Path) -> None:
        from emovox.atomic import atomic_write_json

        directory = Path(directory)
        if self.config.mode == "lora":
            save_adapter(self.lm, directory / "adapters" / "llm")
        if self.config.save_base or self.source.startswith("tiny:"):
            save_base_lm(self.lm, self.tokenizer, directory / "branches" / "llm")
        save_own_weights(self, directory)
        atomic_write_json(directory / LLM_FILE, self._sidecar())

    @classmethod
    def load(cls, directory: Path, config: LLMClassifierConfig, labels: Sequence[str]) -> LLMClassifier:
        directory = Path(directory)
        sidecar = read_sidecar(directory)
        lm = load_base(directory, config.llm, config.gguf_file, sidecar)
        adapter = directory / "adapters" / "llm" if config.mode == "lora" else None
        model = cls(config, labels, lm, adapter_dir=adapter)
        check_verbalizer(directory, sidecar, model.encoder.verbalizer.to_dict())
        load_own_weights(model, directory)
        return model.eval()


def read_sidecar(directory: Path) -> dict:
    path = Path(directory) / LLM_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecognizerError(f"{path}: cannot read the LLM record of this recognizer ({type(exc).__name__}: {exc})") from None


def load_base(directory: Path, source: str, gguf_file: str | None, sidecar: dict):
    """The saved base (``branches/llm``) if present, else the configured source."""
    from emovox.backbones.llm import load_causal_lm

    saved = Path(directory) / "branches" / "llm"
    if (saved / "config.json").is_file():
        lm = load_causal_lm(str(saved))
        lm.source, lm.dequantized = sidecar.get("source", source), bool(sidecar.get("dequantized", False))
        return lm
    if source.startswith("tiny:"):
        raise RecognizerError(f"{directory}: a tiny-model recognizer must hold its base model in branches/llm/")
    return load_causal_lm(source, gguf_file=gguf_file)


def check_verbalizer(directory: Path, sidecar: dict, current: dict) -> None:
    """The label words and their token ids must be those the recognizer was trained with."""
    saved = sidecar.get("verbalizer") or {}
    if saved.get("labels") != current["labels"] or saved.get("words") != current["words"]:
        raise RecognizerError(
            f"{directory}: this recognizer was trained with the label words {saved.get('words')} for "
            f"{saved.get('labels')}, but the configuration now gives {current['words']} for {current['labels']}; "
            "load it with the configuration it was trained with"
        )
    if saved != current:
        raise RecognizerError(
            f"{directory}: the label words tokenise differently now ({current['token_ids']}) than when this "
            f"recognizer was trained ({saved.get('token_ids')}): the base model's tokenizer has changed; "
            "use the original base model (or retrain)"
        )

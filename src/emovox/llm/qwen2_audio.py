"""``qwen2-audio-lora``: an audio-language model adapted with LoRA (the paper's Qwen-Audio system).

The paper fine-tunes Qwen-Audio-Chat with LoRA on the language model while its Whisper-based
audio encoder stays frozen (section 3.2; best in-house r = 64, alpha = 1024; Adam, weight
decay 0.1, batch 3, lr 1e-4, 6 epochs, linear decay), with the Table 1 prompt and the same
label-word scoring and answer parsing as the text system. transformers ships its successor,
``Qwen2AudioForConditionalGeneration``, whose processor expands the chat template's audio
placeholder into one token per encoder frame (25 per second, the input padded to 30 s).

Everything but LoRA adapters on the language model is frozen (the audio encoder and the
audio-to-text projector included), so a recognizer directory holds only ``adapters/llm/``
(plus the base in ``branches/qwen2-audio/`` for tiny test models or with ``save_base``).
No real checkpoint is reachable from this machine (7B parameters, a GPU's work); the tests
use ``tiny: true``, a random model of the same classes with 4 s inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from emovox.audio import SAMPLE_RATE
from emovox.errors import LLMError, RecognizerError
from emovox.llm.answers import AnswerParser, ZeroShotAnswers, map_answers
from emovox.llm.classifier import LLM_FILE, ZeroShotConfig, check_verbalizer, load_own_weights, read_sidecar, save_own_weights
from emovox.llm.lora import LoRAConfig, add_lora, base_state_dict, load_adapter, save_adapter
from emovox.llm.prompts import PAPER_QWEN_AUDIO_PROMPT, PromptConfig, answer_separator
from emovox.llm.scoring import answer_loss_and_scores, append_answers, position_ids, training_answers, transcript
from emovox.llm.verbalizers import build_verbalizer, label_words
from emovox.models.base import KindConfig, ModelKind

#: Section 4.2, Task 2.
PAPER_TRAIN: dict[str, Any] = {"optimizer": "adam", "lr": 1e-4, "batch_size": 3, "max_epochs": 6,
                               "scheduler": "linear-to-zero", "weight_decay": 0.1}
#: LoRA on the language model's attention only; the audio encoder's layers have the same names.
LANGUAGE_MODEL_QV = r".*language_model\..*\.(q_proj|v_proj)"
TINY_SECONDS = 4
BASE_DIR = "qwen2-audio"


def _qwen_prompt() -> PromptConfig:
    return PromptConfig(template=PAPER_QWEN_AUDIO_PROMPT)


def _paper_lora() -> LoRAConfig:
    return LoRAConfig(rank=64, alpha=1024, dropout=0.05, target_modules=LANGUAGE_MODEL_QV)


class Qwen2AudioLoRAConfig(KindConfig):
    """``model.kind: qwen2-audio-lora``."""

    kind: Literal["qwen2-audio-lora"] = "qwen2-audio-lora"
    model: str = Field("Qwen/Qwen2-Audio-7B-Instruct", description="Hub id or local directory of a Qwen2-Audio model.")
    tiny: bool = Field(False, description="A tiny random Qwen2-Audio (tests).")
    mode: Literal["lora", "zero-shot"] = "lora"
    lora: LoRAConfig = Field(default_factory=_paper_lora)
    prompt: PromptConfig = Field(default_factory=_qwen_prompt)
    label_words: dict[str, str] = Field(default_factory=dict)
    zero_shot: ZeroShotConfig = ZeroShotConfig()
    save_base: bool = False


def build_tiny_qwen2_audio(seed: int = 0):
    """A random ``Qwen2AudioForConditionalGeneration`` (32-wide, 2+2 layers, 4 s inputs) and its processor.

    As with emovox's tiny Whisper, the 0.02-initialised convolutions would be drowned by the
    unit-scale position table (frames would encode position, not sound), and a 32-wide LM head
    at 0.02 cannot produce confident logits; both are scaled up, the rest keeps real init.
    """
    import transformers as tf

    from emovox.backbones.llm import HEAD_SCALE, tiny_lm_config, tiny_tokenizer
    from emovox.backbones.tiny import build_seeded

    tokenizer = tiny_tokenizer("qwen2")
    extractor = tf.WhisperFeatureExtractor(feature_size=128, chunk_length=TINY_SECONDS)
    processor = tf.Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    audio_cfg = tf.Qwen2AudioEncoderConfig(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2,
                                           encoder_ffn_dim=64, d_model=32, max_source_positions=TINY_SECONDS * 50)
    config = tf.Qwen2AudioConfig(audio_config=audio_cfg, text_config=tiny_lm_config("qwen2", tokenizer),
                                 audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    model = build_seeded(tf.Qwen2AudioForConditionalGeneration, config, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(HEAD_SCALE)
        model.model.audio_tower.conv1.weight.mul_(10)
        model.model.audio_tower.conv2.weight.mul_(10)
    return model.eval(), processor


def _load_pretrained(source: str):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from emovox.backbones.base import QuietTransformers, describe

    try:
        with QuietTransformers():
            processor = AutoProcessor.from_pretrained(source)
            model = Qwen2AudioForConditionalGeneration.from_pretrained(source, use_safetensors=True)
    except Exception as exc:
        raise LLMError(
            f"could not load Qwen2-Audio from '{source}' ({describe(exc)}); offline, it must be a local directory "
            "(the 7B model needs a GPU: see the recipe notes)"
        ) from None
    return model.eval(), processor


class Qwen2AudioLoRA(ModelKind):
    kind: ClassVar[str] = "qwen2-audio-lora"
    Config: ClassVar[type[KindConfig]] = Qwen2AudioLoRAConfig
    PAPER_TRAIN: ClassVar[dict[str, Any]] = PAPER_TRAIN

    def __init__(self, config: Qwen2AudioLoRAConfig, labels: Sequence[str], model, processor, *, seed: int = 0,
                 adapter_dir: Path | None = None, source: str = ""):
        super().__init__(config, labels)
        config.prompt.check(audio=False)
        if config.mode == "zero-shot" and config.zero_shot.fallback not in self.labels:
            raise LLMError(f"zero_shot.fallback '{config.zero_shot.fallback}' is not a label of {list(self.labels)}; set it")
        self.seed = seed
        self.source = source
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.words = label_words(self.labels, config.prompt.language, config.label_words)
        self.verbalizer = build_verbalizer(self.labels, self.words, self.tokenizer, answer_separator(self._render("x")))
        self.pad_id = int(self.tokenizer.pad_token_id)
        for p in model.parameters():  # audio encoder, projector and LM all frozen; adapters only
            p.requires_grad_(False)
        if config.mode == "lora":
            self.lm = (load_adapter(model, adapter_dir, trainable=True) if adapter_dir
                       else add_lora(model, config.lora, seed=seed))
        else:
            self.lm = model
        self.parser = AnswerParser(self.labels, {label: [w] for label, w in zip(self.labels, self.words, strict=True)})

    @classmethod
    def build(cls, config: Qwen2AudioLoRAConfig, labels: Sequence[str], *, seed: int = 0, backbones=None) -> Qwen2AudioLoRA:
        model, processor = build_tiny_qwen2_audio(seed) if config.tiny else _load_pretrained(config.model)
        return cls(config, labels, model, processor, seed=seed, source="tiny" if config.tiny else config.model)

    def fields(self) -> set[str]:
        return {"audio", "text"} if self.config.prompt.reads_text() else {"audio"}

    def max_seconds(self) -> float:
        """The processor pads or cuts every clip to its window (30 s; the tiny model's 4 s)."""
        return float(self.processor.feature_extractor.chunk_length)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.source, "label_words": dict(zip(self.labels, self.words, strict=True)),
                "trains": "LoRA adapters on the language model" if self.config.mode == "lora" else "nothing"}

    def fit_direct(self, train, valid) -> dict | None:
        return {"mode": "zero-shot", "fitted": "nothing"} if self.config.mode == "zero-shot" else None

    def _render(self, text: str | None) -> str:
        prompt = self.config.prompt
        body = prompt.chosen_template().format(labels=", ".join(self.words), text=text or "")
        content = [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": body}]
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
            {"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prompt.answer_prefix

    def collate(self, batch: list, *, augment: bool = False) -> dict:
        reads_text = self.config.prompt.reads_text()
        texts = [self._render(transcript(e) if reads_text else None) for e in batch]
        clips = []
        for e in batch:
            if getattr(e, "audio", None) is None:
                raise LLMError(f"utterance {e.id} has no audio, which Qwen2-Audio needs")
            clips.append(np.asarray(e.audio, dtype=np.float32))
        out = self.processor(text=texts, audio=clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
        return {k: out[k] for k in ("input_ids", "attention_mask", "input_features", "feature_attention_mask")}

    def _lm_logits(self, inputs: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                       input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"],
                       use_cache=False).logits

    def logits(self, inputs: dict) -> torch.Tensor:
        logits = self._lm_logits(inputs, inputs["input_ids"], inputs["attention_mask"])[:, -1]
        return logits[:, self.verbalizer.first_ids].float()

    def loss(self, inputs: dict, targets: torch.Tensor, weight: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token CE on the target's label word, as the text system (rows weighted by class if given)."""
        answers = training_answers(self.verbalizer, targets.tolist(), self.tokenizer, self.config.prompt.answer_eos)
        ids, mask = append_answers(inputs["input_ids"].cpu(), inputs["attention_mask"].cpu(), answers, self.pad_id)
        device = inputs["input_ids"].device
        keep = max(len(a) for a in answers) + 1
        logits = self._lm_logits(inputs, ids.to(device), mask.to(device))[:, -keep:]
        rows = weight.to(device)[targets.to(device)] if weight is not None else None
        loss, scores = answer_loss_and_scores(logits, answers, self.verbalizer.first_ids, rows)
        return loss, scores / self.temperature

    @torch.inference_mode()
    def zero_shot_answers(self, examples: Sequence, *, batch_size: int = 4) -> ZeroShotAnswers:
        answers: list[str] = []
        for start in range(0, len(examples), batch_size):
            inputs = self.collate(list(examples[start:start + batch_size]))
            generated = self.lm.generate(**inputs, max_new_tokens=self.config.zero_shot.max_new_tokens, do_sample=False,
                                         pad_token_id=self.pad_id)
            answers += [a.strip() for a in self.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:],
                                                                      skip_special_tokens=True)]
        return map_answers(answers, self.parser, self.config.zero_shot.fallback)

    def save(self, directory: Path) -> None:
        from emovox.atomic import atomic_write_json
        from emovox.backbones.base import QuietTransformers

        directory = Path(directory)
        if self.config.mode == "lora":
            save_adapter(self.lm, directory / "adapters" / "llm")
        if self.config.save_base or self.config.tiny:
            base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
            with QuietTransformers():
                base.save_pretrained(str(directory / "branches" / BASE_DIR), state_dict=base_state_dict(self.lm))
                self.processor.save_pretrained(str(directory / "branches" / BASE_DIR))
        save_own_weights(self, directory)
        atomic_write_json(directory / LLM_FILE, {"format": 1, "kind": self.kind, "source": self.source,
                                                 "verbalizer": self.verbalizer.to_dict()})

    @classmethod
    def load(cls, directory: Path, config: Qwen2AudioLoRAConfig, labels: Sequence[str]) -> Qwen2AudioLoRA:
        directory = Path(directory)
        sidecar = read_sidecar(directory)
        saved = directory / "branches" / BASE_DIR
        if (saved / "config.json").is_file():
            model, processor = _load_pretrained(str(saved))
        elif config.tiny:
            raise RecognizerError(f"{directory}: a tiny-model recognizer must hold its base model in branches/{BASE_DIR}/")
        else:
            model, processor = _load_pretrained(config.model)
        adapter = directory / "adapters" / "llm" if config.mode == "lora" else None
        out = cls(config, labels, model, processor, adapter_dir=adapter, source=sidecar.get("source", config.model))
        check_verbalizer(directory, sidecar, out.verbalizer.to_dict())
        load_own_weights(out, directory)
        return out.eval()

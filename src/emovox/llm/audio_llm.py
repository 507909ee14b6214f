"""``audio-llm``: Whisper frames -> a trained linear projector -> a frozen LLM (the paper's Whisper-Gemma).

The paper's lightweight multimodal system (Figure 2): a frozen Whisper encoder, a linear
projection of its frames into the LLM's embedding space placed where the prompt says
``Audio information: <audio>``, a frozen LLM, and the logits of the label words' first tokens
at the last position as class scores, trained with class-weighted cross-entropy. Only the
projector trains (plus LoRA adapters on the LLM when ``lora`` is set).

Why the frames are pooled: Whisper gives 50 frames per second; an EmoDB clip of up to 9 s
would add 450 positions to a 100-token prompt, and the LLM's cost grows with every one.
``frames_per_token`` (default 10) averages (``mean``) or concatenates (``stack``, SLAM-LLM's
projector input) that many frames per audio token: 5 tokens per second, at most 45 for the
longest EmoDB clip and 50 for the 10 s crop.

Why a layer norm (without parameters) before the projector and a small initialisation: Whisper's
top-layer features have a few very large dimensions, and a default-initialised Linear would put
the audio tokens at ~30x the norm of the LLM's word embeddings, where the frozen LLM has never
seen anything; starting at the embeddings' scale lets the first steps be useful.

The encoder is emovox's ``WhisperBackbone``: each batch runs at its longest clip's real
length with padded frames masked, so a clip's audio tokens do not depend on its batch-mates.
``prepare`` can run the frozen encoder and pooling once per utterance (they never change
during training) and keep the result in ``Example.cached[audio_key]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from emovox.audio import SAMPLE_RATE
from emovox.errors import LLMError
from emovox.llm.classifier import (
    LLM_FILE,
    check_verbalizer,
    load_base,
    load_own_weights,
    read_sidecar,
    save_base_lm,
    save_own_weights,
)
from emovox.llm.lora import LoRAConfig, add_lora, load_adapter, save_adapter
from emovox.llm.prompts import PAPER_AUDIO_PROMPT, PromptConfig
from emovox.llm.scoring import PromptEncoder, lm_logits, transcript
from emovox.models.base import KindConfig, ModelKind

#: The paper's best Whisper-Gemma setting (Table 2): batch 4, lr 1e-3.
PAPER_TRAIN: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "batch_size": 4, "class_weights": "inverse"}


def _audio_prompt() -> PromptConfig:
    return PromptConfig(template=PAPER_AUDIO_PROMPT, answer_prefix="emotion =")


class AudioLLMConfig(KindConfig):
    """``model.kind: audio-llm``."""

    kind: Literal["audio-llm"] = "audio-llm"
    llm: str = Field("smollm2-135m-instruct", description="Packaged GGUF name, .gguf file, model directory, or tiny:FAMILY.")
    gguf_file: str | None = None
    audio: str = Field("whisper-base", description="Whisper registry name or local directory.")
    audio_tiny: bool = Field(False, description="A tiny random Whisper of the same class (tests).")
    max_seconds: float = Field(10.0, gt=0, description="Clips are cropped to this length.")
    frames_per_token: int = Field(10, gt=0, description="Whisper frames (20 ms each) per audio token.")
    pooling: Literal["mean", "stack"] = "mean"
    prompt: PromptConfig = Field(default_factory=_audio_prompt)
    label_words: dict[str, str] = Field(default_factory=dict)
    max_text_tokens: int = Field(256, gt=0)
    lora: LoRAConfig | None = Field(None, description="Also adapt the LLM with LoRA (default: LLM frozen).")
    save_base: bool = False


def pool_frames(hidden: torch.Tensor, mask: torch.Tensor, k: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T, H]`` frames -> ``[B, ceil(T/k), H or k*H]`` tokens and each clip's token count.

    A clip with n real frames gets ceil(n / k) tokens; its last, partial window averages (or
    stacks, zero-filled) only its real frames, so padding never enters a clip's tokens.
    """
    b, t, h = hidden.shape
    tokens = math.ceil(t / k)
    pad = tokens * k - t
    real = mask.to(hidden.dtype)
    x = nn.functional.pad(hidden * real.unsqueeze(-1), (0, 0, 0, pad)).view(b, tokens, k, h)
    counts = nn.functional.pad(real, (0, pad)).view(b, tokens, k).sum(-1)
    lengths = torch.div(mask.long().sum(-1) + k - 1, k, rounding_mode="floor")
    if mode == "mean":
        return x.sum(2) / counts.clamp_min(1.0).unsqueeze(-1), lengths
    return x.reshape(b, tokens, k * h), lengths


class AudioProjector(nn.Module):
    """Parameter-free layer norm, then the trainable linear map into the LLM's embedding space."""

    def __init__(self, in_dim: int, out_dim: int, *, target_std: float, seed: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, elementwise_affine=False)
        self.linear = nn.Linear(in_dim, out_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.normal_(self.linear.weight, std=target_std / math.sqrt(in_dim))
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class AudioLLM(ModelKind):
    kind: ClassVar[str] = "audio-llm"
    Config: ClassVar[type[KindConfig]] = AudioLLMConfig
    PAPER_TRAIN: ClassVar[dict[str, Any]] = PAPER_TRAIN

    def __init__(self, config: AudioLLMConfig, labels: Sequence[str], lm, audio, *, seed: int = 0,
                 adapter_dir: Path | None = None):
        super().__init__(config, labels)
        if audio.spec.family != "whisper":
            raise LLMError(f"audio-llm needs a Whisper encoder, but '{config.audio}' is a {audio.spec.family} model")
        self.seed = seed
        self.source, self.dequantized = lm.source, lm.dequantized
        self.tokenizer = lm.tokenizer
        self.encoder = PromptEncoder(lm.tokenizer, config.prompt, self.labels, overrides=config.label_words, audio=True,
                                     max_text_tokens=config.max_text_tokens)
        self.audio = audio
        self.audio.freeze()
        for p in lm.model.parameters():
            p.requires_grad_(False)
        if config.lora is not None:
            self.lm = (load_adapter(lm.model, adapter_dir, trainable=True) if adapter_dir
                       else add_lora(lm.model, config.lora, seed=seed))
        else:
            self.lm = lm.model
        embed = lm.model.get_input_embeddings()
        with torch.no_grad():  # the scale the LLM's own inputs have (Gemma scales its embeddings)
            sample = torch.arange(min(embed.num_embeddings, 4096), device=embed.weight.device)
            target_std = float(embed(sample).float().std())
        in_dim = audio.hidden_size * (config.frames_per_token if config.pooling == "stack" else 1)
        self.projector = AudioProjector(in_dim, embed.embedding_dim, target_std=target_std, seed=seed)
        self.audio_key = f"audio-llm:{audio.spec.name}:{config.pooling}{config.frames_per_token}"

    # -- the kind interface ----------------------------------------------------------------------
    @classmethod
    def build(cls, config: AudioLLMConfig, labels: Sequence[str], *, seed: int = 0, backbones=None) -> AudioLLM:
        from emovox.llm.classifier import load_lm
        from emovox.models.branch import BackboneStore

        # the frozen encoder is shared by every fold of a run (BackboneStore keys it like a frozen branch)
        spec = SimpleNamespace(backbone=config.audio, tiny=config.audio_tiny, max_tokens=100,
                               max_seconds=config.max_seconds, mode="frozen")
        audio = (backbones or BackboneStore()).get(spec, seed)
        return cls(config, labels, load_lm(config.llm, config.gguf_file, seed), audio, seed=seed)

    def fields(self) -> set[str]:
        return {"audio", "text"} if self.config.prompt.reads_text() else {"audio"}

    def max_seconds(self) -> float:
        return self.config.max_seconds

    def train(self, mode: bool = True) -> AudioLLM:
        super().train(mode)
        self.audio.eval()  # frozen: no dropout, no layer drop, ever
        if self.config.lora is None:
            self.lm.eval()
        return self

    def compute_size(self) -> int:
        """What runs in a training step on cached audio tokens: projector and LLM (not the encoder)."""
        encoder = {id(p) for p in self.audio.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in encoder)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "llm": self.source, "dequantized_gguf": self.dequantized, "audio": self.audio.spec.name,
                "audio_tokens_per_second": 50 / self.config.frames_per_token,
                "label_words": dict(zip(self.labels, self.encoder.words, strict=True)),
                "trains": "projector" + (" and LoRA adapters" if self.config.lora is not None else "")}

    @torch.inference_mode()
    def audio_tokens(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """The pooled frozen-encoder tokens of each clip, ``[n_i, D]`` (what the projector reads)."""
        enc = self.audio(self.audio.preprocess(list(clips)))
        pooled, lengths = pool_frames(enc.hidden, enc.mask, self.config.frames_per_token, self.config.pooling)
        return [pooled[i, : int(n)].float().cpu() for i, n in enumerate(lengths)]

    def _cache_key(self) -> str:
        from emovox.cache import backbone_identity, cache_key

        ident = backbone_identity(self.audio, tiny=self.config.audio_tiny, seed=self.seed)
        ident.update(kept=f"last layer, {self.config.pooling} of {self.config.frames_per_token} frames")
        return cache_key(f"audio-llm-{self.audio.spec.name}", ident)

    def prepare(self, examples: Sequence, *, cache=None, progress: bool = False) -> list:
        """Run the frozen encoder once per utterance (or read it from ``cache``); tokens go into ``Example.cached``."""
        from emovox.cache import fill

        width = self.projector.linear.in_features
        out = fill(
            [e.audio for e in examples], [len(e.audio) / SAMPLE_RATE for e in examples],
            lambda clips: [{"tokens": t} for t in self.audio_tokens(clips)],
            cache=cache, model_key=self._cache_key() if cache is not None else None,
            expect=lambda clip: {"tokens": (None, width)}, batch_size=8, progress=progress,
            description=f"audio-llm: {self.audio.spec.name} frames",
        )
        return [_with_cached(e, self.audio_key, o["tokens"].numpy()) for e, o in zip(examples, out, strict=True)]

    def collate(self, batch: list, *, augment: bool = False) -> dict:
        reads_text = self.config.prompt.reads_text()
        parts = [self.encoder.prompt_parts(transcript(e) if reads_text else None) for e in batch]
        inputs: dict[str, Any] = {
            "prefix_ids": _right_pad([p[0] for p in parts], self.encoder.pad_id),
            "suffix_ids": _right_pad([p[1] for p in parts], self.encoder.pad_id),
            "prefix_len": torch.tensor([len(p[0]) for p in parts]),
            "suffix_len": torch.tensor([len(p[1]) for p in parts]),
        }
        for e in batch:
            if getattr(e, "audio", None) is None and self.audio_key not in (getattr(e, "cached", None) or {}):
                raise LLMError(f"utterance {e.id} has no audio, which the audio LLM needs")
        if all(self.audio_key in (e.cached or {}) for e in batch):
            tokens = [torch.as_tensor(np.asarray(e.cached[self.audio_key])) for e in batch]
            inputs["audio_tokens"] = nn.utils.rnn.pad_sequence(tokens, batch_first=True)
            inputs["audio_len"] = torch.tensor([len(t) for t in tokens])
        else:
            inputs.update({f"whisper_{k}": v for k, v in self.audio.preprocess([e.audio for e in batch]).items()})
        return inputs

    def _audio(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "audio_tokens" in inputs:
            return inputs["audio_tokens"], inputs["audio_len"]
        with torch.no_grad():
            enc = self.audio({k[len("whisper_"):]: v for k, v in inputs.items() if k.startswith("whisper_")})
            return pool_frames(enc.hidden, enc.mask, self.config.frames_per_token, self.config.pooling)

    def embed(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt as LLM input embeddings with the projected audio at the placeholder, left-padded."""
        feats, lengths = self._audio(inputs)
        projected = self.projector(feats.to(self.projector.linear.weight))
        embedding = self.lm.get_input_embeddings()
        prefix, suffix = embedding(inputs["prefix_ids"]), embedding(inputs["suffix_ids"])
        rows = [
            torch.cat([prefix[i, : inputs["prefix_len"][i]], projected[i, : lengths[i]], suffix[i, : inputs["suffix_len"][i]]])
            for i in range(projected.shape[0])
        ]
        longest = max(r.shape[0] for r in rows)
        embeds = projected.new_zeros((len(rows), longest, projected.shape[-1]))
        mask = torch.zeros((len(rows), longest), dtype=torch.long, device=projected.device)
        for i, r in enumerate(rows):
            embeds[i, longest - r.shape[0]:] = r
            mask[i, longest - r.shape[0]:] = 1
        return embeds, mask

    def logits(self, inputs: dict) -> torch.Tensor:
        embeds, mask = self.embed(inputs)
        logits = lm_logits(self.lm, inputs_embeds=embeds, mask=mask, keep=1)[:, -1]
        return logits[:, self.encoder.verbalizer.first_ids].float()

    # the default loss (class-weighted cross-entropy over these logits) is the paper's Whisper-Gemma loss

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from emovox.atomic import atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.audio.save(directory / "branches" / "audio")
        if self.config.lora is not None:
            save_adapter(self.lm, directory / "adapters" / "llm")
        if self.config.save_base or self.source.startswith("tiny:"):
            save_base_lm(self.lm, self.tokenizer, directory / "branches" / "llm")
        save_own_weights(self, directory, {f"projector.{k}": v for k, v in self.projector.state_dict().items()})
        sidecar = {"format": 1, "kind": self.kind, "source": self.source, "dequantized": self.dequantized,
                   "chat": self.encoder.chat, "verbalizer": self.encoder.verbalizer.to_dict()}
        atomic_write_json(directory / LLM_FILE, sidecar)

    @classmethod
    def load(cls, directory: Path, config: AudioLLMConfig, labels: Sequence[str]) -> AudioLLM:
        from emovox.models.registry import load_branch_backbone

        directory = Path(directory)
        sidecar = read_sidecar(directory)
        lm = load_base(directory, config.llm, config.gguf_file, sidecar)
        limits = SimpleNamespace(max_tokens=100, max_seconds=config.max_seconds)
        audio = load_branch_backbone(directory / "branches" / "audio", limits)
        adapter = directory / "adapters" / "llm" if config.lora is not None else None
        model = cls(config, labels, lm, audio, adapter_dir=adapter)
        check_verbalizer(directory, sidecar, model.encoder.verbalizer.to_dict())
        expected = {f"projector.{k}": v for k, v in model.projector.state_dict().items()}
        tensors = load_own_weights(model, directory, expected)
        model.projector.load_state_dict({k[len("projector."):]: v for k, v in tensors.items()})
        return model.eval()


def _with_cached(example, key: str, value):
    """A copy of ``example`` with ``value`` in ``cached[key]`` (``Example.with_cached`` where it exists)."""
    if hasattr(example, "with_cached"):
        return example.with_cached(key, value)
    return dataclasses.replace(example, cached={**dict(example.cached or {}), key: value})


def _right_pad(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    longest = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), longest), int(pad_id), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out

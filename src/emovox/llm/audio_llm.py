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
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from emovox.errors import LLMError
from emovox.llm.classifier import LLM_FILE, check_verbalizer, load_base, read_sidecar, save_base_lm
from emovox.llm.lora import LoRAConfig, add_lora, load_adapter, lora_parameters, save_adapter
from emovox.llm.prompts import PAPER_AUDIO_PROMPT, PromptConfig
from emovox.llm.scoring import PromptEncoder, lm_logits, transcript

#: The paper's best Whisper-Gemma setting (Table 2): batch 4, lr 1e-3.
PAPER_TRAIN: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "batch_size": 4, "class_weights": "inverse"}
WEIGHTS_FILE = "weights.safetensors"


def _audio_prompt() -> PromptConfig:
    return PromptConfig(template=PAPER_AUDIO_PROMPT, answer_prefix="emotion =")


class AudioLLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


class AudioLLM(nn.Module):
    kind: ClassVar[str] = "audio-llm"
    Config: ClassVar[type[BaseModel]] = AudioLLMConfig
    PAPER_TRAIN: ClassVar[dict[str, Any]] = PAPER_TRAIN

    def __init__(self, cfg: AudioLLMConfig, labels: Sequence[str], lm, audio, *, seed: int = 0,
                 adapter_dir: Path | None = None):
        super().__init__()
        if audio.spec.family != "whisper":
            raise LLMError(f"audio-llm needs a Whisper encoder, but '{cfg.audio}' is a {audio.spec.family} model")
        self.cfg = cfg
        self.labels = list(labels)
        self.source, self.dequantized = lm.source, lm.dequantized
        self.tokenizer = lm.tokenizer
        self.encoder = PromptEncoder(lm.tokenizer, cfg.prompt, self.labels, overrides=cfg.label_words, audio=True,
                                     max_text_tokens=cfg.max_text_tokens)
        self.audio = audio
        self.audio.freeze()
        for p in lm.model.parameters():
            p.requires_grad_(False)
        if cfg.lora is not None:
            self.lm = load_adapter(lm.model, adapter_dir, trainable=True) if adapter_dir else add_lora(lm.model, cfg.lora, seed=seed)
        else:
            self.lm = lm.model
        embed = lm.model.get_input_embeddings()
        with torch.no_grad():  # the scale the LLM's own inputs have (Gemma scales its embeddings)
            sample = torch.arange(min(embed.num_embeddings, 4096), device=embed.weight.device)
            target_std = float(embed(sample).float().std())
        in_dim = audio.hidden_size * (cfg.frames_per_token if cfg.pooling == "stack" else 1)
        self.projector = AudioProjector(in_dim, embed.embedding_dim, target_std=target_std, seed=seed)
        self.audio_key = f"audio-llm:{audio.spec.name}:{cfg.pooling}{cfg.frames_per_token}"

    # -- the kind interface ----------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: AudioLLMConfig, labels: Sequence[str], *, seed: int) -> "AudioLLM":
        from emovox.backbones import load_backbone
        from emovox.llm.classifier import _load_lm

        audio = load_backbone(cfg.audio, tiny=cfg.audio_tiny, max_seconds=cfg.max_seconds, seed=seed)
        return cls(cfg, labels, _load_lm(cfg.llm, cfg.gguf_file, seed), audio, seed=seed)

    def fields(self) -> set[str]:
        return {"audio", "text"} if self.cfg.prompt.reads_text() else {"audio"}

    def train(self, mode: bool = True) -> "AudioLLM":
        super().train(mode)
        self.audio.eval()  # frozen: no dropout, no layer drop, ever
        if self.cfg.lora is None:
            self.lm.eval()
        return self

    def param_groups(self, train_cfg: Any = None) -> list[dict]:
        lr = getattr(train_cfg, "lr", None) or PAPER_TRAIN["lr"]
        groups = [{"params": list(self.projector.parameters()), "lr": lr}]
        if self.cfg.lora is not None:
            groups.append({"params": lora_parameters(self.lm), "lr": lr})
        return groups

    @torch.inference_mode()
    def audio_tokens(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """The pooled frozen-encoder tokens of each clip, ``[n_i, D]`` (what the projector reads)."""
        enc = self.audio(self.audio.preprocess(list(clips)))
        pooled, lengths = pool_frames(enc.hidden, enc.mask, self.cfg.frames_per_token, self.cfg.pooling)
        return [pooled[i, : int(n)].float().cpu() for i, n in enumerate(lengths)]

    def prepare(self, examples: Sequence, *, cache=None, progress: bool = False, batch_size: int = 8) -> list:
        """Run the frozen encoder once per utterance; the tokens go into ``Example.cached``."""
        from tqdm.auto import tqdm

        order = sorted(range(len(examples)), key=lambda i: len(examples[i].audio))
        out = list(examples)
        for start in tqdm(range(0, len(order), batch_size), desc="audio-llm: Whisper frames", disable=not progress):
            index = order[start:start + batch_size]
            tokens = self.audio_tokens([examples[i].audio for i in index])
            for i, t in zip(index, tokens):
                e = examples[i]
                out[i] = dataclasses.replace(e, cached={**dict(e.cached or {}), self.audio_key: t.numpy()})
        return out

    def collate(self, batch: list) -> dict:
        reads_text = self.cfg.prompt.reads_text()
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
            return pool_frames(enc.hidden, enc.mask, self.cfg.frames_per_token, self.cfg.pooling)

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

    def forward(self, inputs: dict) -> torch.Tensor:
        embeds, mask = self.embed(inputs)
        logits = lm_logits(self.lm, inputs_embeds=embeds, mask=mask, keep=1)[:, -1]
        return logits[:, self.encoder.verbalizer.first_ids].float()

    def loss(self, inputs: dict, targets: torch.Tensor, class_weight: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-weighted cross-entropy over the label words' logits (the paper's Whisper-Gemma loss)."""
        logits = self(inputs)
        weight = class_weight.to(logits.device) if class_weight is not None else None
        return nn.functional.cross_entropy(logits, targets.to(logits.device), weight=weight), logits

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({f"projector.{k}": v.detach().contiguous().cpu() for k, v in self.projector.state_dict().items()},
                  str(directory / WEIGHTS_FILE))
        self.audio.save(directory / "branches" / "audio")
        if self.cfg.lora is not None:
            save_adapter(self.lm, directory / "adapters" / "llm")
        if self.cfg.save_base or self.source.startswith("tiny:"):
            save_base_lm(self.lm, self.tokenizer, directory / "branches" / "llm")
        sidecar = {"format": 1, "kind": self.kind, "source": self.source, "dequantized": self.dequantized,
                   "chat": self.encoder.chat, "verbalizer": self.encoder.verbalizer.to_dict()}
        (directory / LLM_FILE).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, config: AudioLLMConfig, labels: Sequence[str]) -> "AudioLLM":
        from safetensors.torch import load_file

        from emovox.backbones import load_backbone

        directory = Path(directory)
        sidecar = read_sidecar(directory)
        lm = load_base(directory, config.llm, config.gguf_file, sidecar)
        audio = load_backbone(directory / "branches" / "audio")
        adapter = directory / "adapters" / "llm" if config.lora is not None else None
        model = cls(config, labels, lm, audio, adapter_dir=adapter)
        check_verbalizer(directory, sidecar, model.encoder.verbalizer.to_dict())
        tensors = load_file(str(directory / WEIGHTS_FILE))
        model.projector.load_state_dict({k[len("projector."):]: v for k, v in tensors.items()})
        return model.eval()


def _right_pad(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    longest = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), longest), int(pad_id), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out

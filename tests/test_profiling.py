"""`emovox profile`: offline parameter and GFLOP counts, checked against the IEMOCAP paper's Table 1."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
from typer.testing import CliRunner

from emovox.backbones.architectures import ARCHITECTURES, PAPER_TABLE1, PAPER_TABLE6_MB, Architecture
from emovox.backbones.registry import FAMILIES, REGISTRY
from emovox.cli import app
from emovox.errors import BackboneError
from emovox.profiling import build_architecture, count_params_and_flops, count_weight_bytes, profile_all, profile_backbone

TOLERANCE = 0.02  # the bar: every Table 1 row within 2 %


def learned_registry() -> list[str]:
    """Registry names with learned weights (openSMILE functionals have none, and no architecture)."""
    return [name for name, spec in REGISTRY.items() if FAMILIES[spec.family].learned]


def test_every_registry_backbone_has_an_architecture_and_vice_versa() -> None:
    assert set(learned_registry()) == set(ARCHITECTURES)
    assert set(PAPER_TABLE1) <= set(ARCHITECTURES)


def test_a_backbone_without_weights_has_no_parameters_and_no_gflops(monkeypatch: pytest.MonkeyPatch) -> None:
    row = profile_backbone("opensmile-compare")
    assert (row.params_m, row.gflops, row.size_mb) == (0.0, None, 0.0) and row.gflops_diff is None
    assert "no learned weights" in row.note and "GFLOPs not counted" in row.note
    monkeypatch.setenv("COLUMNS", "200")  # rich's table width: the name on one line
    result = CliRunner().invoke(app, ["profile", "opensmile-egemaps", "whisper-tiny"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("opensmile-egemaps"))
    assert line.split()[1:] == ["0.00", "-", "-", "-", "-", "-", "0.0"]  # params, paper, diff, GFLOPs, paper, diff, MB
    assert "opensmile-egemaps: fixed features (opensmile:eGeMAPSv02)" in " ".join(result.output.split())
    rows = json.loads(CliRunner().invoke(app, ["profile", "--json", "opensmile-egemaps"]).output)
    assert rows[0]["gflops"] is None and rows[0]["params_m"] == 0.0 and "no learned weights" in rows[0]["note"]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_is_the_registry_family(name: str) -> None:
    import transformers

    config_class = getattr(transformers, ARCHITECTURES[name].config_class)
    assert config_class.model_type == REGISTRY[name].family


@pytest.mark.parametrize("name", list(PAPER_TABLE1))
def test_reproduces_paper_table1(name: str) -> None:
    paper = PAPER_TABLE1[name]
    row = profile_backbone(name, tokens=paper.tokens or 100)
    assert row.params_m == pytest.approx(paper.params_m, rel=TOLERANCE)
    assert row.gflops == pytest.approx(paper.gflops, rel=TOLERANCE)


def test_t5_at_the_papers_stated_100_tokens_is_half_its_table_value() -> None:
    # The one Table 1 value not reproduced at the stated length (see PAPER_TABLE1["t5-base"]).
    assert profile_backbone("t5-base").gflops / PAPER_TABLE1["t5-base"].gflops == pytest.approx(0.49, abs=0.01)


def test_hand_counted_tiny_bert() -> None:
    """fvcore's conventions on a model small enough to count by hand."""
    h, layers, inter, vocab, positions, types, t = 32, 2, 64, 100, 16, 2, 10
    arch = Architecture(
        "BertConfig",
        dict(hidden_size=h, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=inter,
             vocab_size=vocab, max_position_embeddings=positions, type_vocab_size=types),
        "BertModel", "tokens", "eager",
    )
    params, flops = count_params_and_flops(arch, tokens=t)

    per_layer_params = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    assert params == (vocab + positions + types) * h + 2 * h + layers * per_layer_params + h * h + h

    linear = t * layers * (4 * h * h + 2 * h * inter)  # one per multiply-add
    attention = layers * 2 * t * t * h  # scores and weighted sum
    norms = (1 + 2 * layers) * t * h * 5  # fvcore: 5 per element of an affine layer norm
    pooler = h * h  # first token only
    assert flops == linear + attention + norms + pooler

    # Fused attention is one op fvcore has no formula for: the attention products vanish.
    _, fused = count_params_and_flops(dataclasses.replace(arch, attention="sdpa"), tokens=t)
    assert flops - fused == attention


def test_wavlm_fused_attention_drops_its_attention_products() -> None:
    # WavLM runs torch's multi_head_attention_forward, not SDPA: the fused path must reach it too.
    eager_arch = dataclasses.replace(ARCHITECTURES["wavlm-base"], attention="eager")
    _, eager = count_params_and_flops(eager_arch)
    _, fused = count_params_and_flops(ARCHITECTURES["wavlm-base"])
    frames, hidden, layers = 499, 768, 12
    # Eager: QK^T is a baddbmm (not counted by fvcore), the weighted sum a bmm (counted).
    assert eager - fused == layers * frames * frames * hidden


@pytest.mark.slow  # builds and runs the 11 backbones outside Table 1, up to 1 B parameters: 4-15 s
def test_profile_all_covers_the_registry_and_scales_sensibly() -> None:
    rows = {row.name: row for row in profile_all()}
    assert list(rows) == list(REGISTRY)
    for row in rows.values():
        assert row.hub_id == REGISTRY[row.name].hub_id and row.modality == REGISTRY[row.name].modality
        learned = row.name in learned_registry()
        assert (row.params_m > 0 and row.gflops > 0) if learned else (row.params_m == 0 and row.gflops is None)
    whisper = [rows[f"whisper-{size}"] for size in ("tiny", "base", "small", "medium", "large-v3")]
    assert [r.params_m for r in whisper] == sorted(r.params_m for r in whisper)
    assert [r.gflops for r in whisper] == sorted(r.gflops for r in whisper)
    # Same architecture, same numbers; the paper's rows carry the paper's values.
    assert rows["wav2vec2-base-960h"].gflops == rows["wav2vec2-base"].gflops
    assert rows["bert-base"].paper_gflops == 8.50 and rows["whisper-tiny"].paper_gflops is None


def test_profile_is_cached_and_length_dependent() -> None:
    assert profile_backbone("gpt2") is profile_backbone("gpt2")
    short, long = profile_backbone("gpt2", tokens=50), profile_backbone("gpt2", tokens=200)
    assert short.params_m == long.params_m
    assert long.gflops > 3.9 * short.gflops  # linear in length, plus the quadratic attention
    assert profile_backbone("whisper-base", seconds=5).gflops < profile_backbone("whisper-base").gflops


def test_profile_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("profiling tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    row = profile_backbone("whisper-small", seconds=9.5)  # a length no other test caches
    assert row.params_m == pytest.approx(87.0, abs=0.01)


def test_user_errors_are_emovox_errors() -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'no-such-model'"):
        profile_backbone("no-such-model")
    with pytest.raises(BackboneError, match="at least 1 token"):
        profile_backbone("gpt2", tokens=0)


def test_cli_json_schema() -> None:
    result = CliRunner().invoke(app, ["profile", "--json", "bert-base", "whisper-small"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == ["bert-base", "whisper-small"]
    for row in rows:
        assert set(row) == {"name", "hub_id", "modality", "params_m", "gflops", "size_mb"}
        assert row["size_mb"] == pytest.approx(profile_backbone(row["name"]).size_mb, abs=1e-3)
        assert row["hub_id"] == REGISTRY[row["name"]].hub_id
        expected = profile_backbone(row["name"])
        assert row["params_m"] == pytest.approx(expected.params_m, abs=1e-3)
        assert row["gflops"] == pytest.approx(expected.gflops, abs=1e-3)
    assert rows[0]["modality"] == "text" and rows[1]["modality"] == "audio"


def test_cli_table_shows_the_paper_beside_ours() -> None:
    result = CliRunner().invoke(app, ["profile", "bert-base", "t5-base", "whisper-tiny"], terminal_width=200)
    assert result.exit_code == 0, result.output
    bert = next(line for line in result.output.splitlines() if "bert-base" in line)
    assert "109.48" in bert and "109.49" in bert and "8.50" in bert
    t5 = next(line for line in result.output.splitlines() if "t5-base" in line)
    assert "17.72" in t5 and "-51.0%" in t5
    assert "200-token input" in result.output  # the T5 note


def test_cli_unknown_backbone_is_a_user_error() -> None:
    result = CliRunner().invoke(app, ["profile", "--json", "no-such-model"])
    assert result.exit_code != 0
    assert isinstance(result.exception, BackboneError)


# --- size on disk (RAVDESS paper, Table 6) ----------------------------------------------------

TINY_SIZES = {
    # a frozen position table (requires_grad False) must still count: it is in the file
    "whisper": Architecture(
        "WhisperConfig",
        dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, decoder_layers=1,
             decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=40, vocab_size=100,
             pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0),
        "WhisperModel", "log_mel", "sdpa", part="encoder",
    ),
    "bert": Architecture(
        "BertConfig",
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
             max_position_embeddings=16, type_vocab_size=2),
        "BertModel", "tokens", "eager",
    ),
}


@pytest.mark.parametrize("name", list(TINY_SIZES))
def test_size_is_the_data_of_a_real_safetensors_file(name: str, tmp_path) -> None:
    """The counted bytes are exactly the tensor data of the same model saved with safetensors."""
    import struct

    import torch
    from safetensors.torch import save_model

    arch = TINY_SIZES[name]
    torch.manual_seed(0)
    model, _ = build_architecture(arch, seconds=None)  # real tensors here: no FakeTensorMode
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    raw = path.read_bytes()
    header = struct.unpack("<Q", raw[:8])[0]
    assert count_weight_bytes(arch) == len(raw) - 8 - header
    if name == "whisper":  # its frozen position table is in the file though it is not trainable
        assert count_weight_bytes(arch) > 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(PAPER_TABLE6_MB))
def test_reproduces_ravdess_paper_table6(name: str) -> None:
    row = profile_backbone(name)
    assert row.paper_size_mb == PAPER_TABLE6_MB[name]
    # the paper's files also hold a classification head (< 1.1 MB) and round to 3 digits
    assert row.size_mb == pytest.approx(PAPER_TABLE6_MB[name], rel=0.01)


def test_cli_shows_size_beside_table6() -> None:
    result = CliRunner().invoke(app, ["profile", "hubert-base", "whisper-base"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Disk MB" in result.output and "Table 6" in result.output
    table6 = [line for line in lines if "hubert-base" in line and "380" in line]
    assert table6 and "377.5" in table6[0] and "-0.7%" in table6[0]
    assert any("whisper-base" in line and "82.4" in line for line in lines)

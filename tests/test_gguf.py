"""GGUF causal LMs -> cached safetensors model directories (``emovox.backbones.gguf``), offline and tiny."""

from __future__ import annotations

import hashlib
import json
import sys
import types

import pytest
import torch

pytest.importorskip("gguf", reason="the GGUF reader is the `llm` extra: pip install 'emovox[llm]'")

from llm_fixtures import write_llama_gguf  # noqa: E402

from emovox.backbones import gguf as emovox_gguf  # noqa: E402
from emovox.backbones.gguf import GGUF_SIDECAR, PackagedGGUF, convert_gguf, resolve_gguf  # noqa: E402
from emovox.backbones.llm import build_tiny_lm, load_causal_lm  # noqa: E402
from emovox.errors import LLMError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    lm = build_tiny_lm("llama", seed=3)
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    write_llama_gguf(path, lm)
    return path, lm


def test_a_gguf_converts_once_to_the_same_model(tiny_gguf, tmp_path, monkeypatch):
    path, original = tiny_gguf
    directory = convert_gguf(path, cache_dir=tmp_path)
    sidecar = json.loads((directory / GGUF_SIDECAR).read_text())
    assert sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert directory.name == f"gguf-{sidecar['sha256'][:20]}"
    assert sidecar["architecture"] == "LlamaForCausalLM" and "dequantised" in sidecar["note"]
    assert (directory / "model.safetensors").is_file() and not list(directory.glob("*.bin"))
    assert "quantization_config" not in json.loads((directory / "config.json").read_text())

    loaded = load_causal_lm(str(path), cache_dir=tmp_path)
    assert loaded.dequantized and loaded.directory == directory
    text = "The transcription is: hello joy"
    ids = original.tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(loaded.tokenizer(text, return_tensors="pt").input_ids, ids)
    assert loaded.tokenizer.chat_template == original.tokenizer.chat_template
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=ids).logits, original.model(input_ids=ids).logits, atol=1e-5)

    # the second time nothing is converted: the cached directory is reused as it is
    import transformers

    def refuse(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    assert convert_gguf(path, cache_dir=tmp_path) == directory
    # the transformers convention (directory + gguf_file) names the same file, hence the same conversion
    assert resolve_gguf(str(path.parent), path.name, cache_dir=tmp_path) == directory


def test_bad_gguf_sources_are_clear_errors(tmp_path):
    with pytest.raises(LLMError, match="does not exist"):
        convert_gguf(tmp_path / "missing.gguf", cache_dir=tmp_path)
    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model")
    with pytest.raises(LLMError, match="not a GGUF file"):
        convert_gguf(fake, cache_dir=tmp_path)
    with pytest.raises(LLMError, match="not a local directory"):
        resolve_gguf(str(tmp_path / "nowhere"), "x.gguf", cache_dir=tmp_path)
    with pytest.raises(LLMError, match="unknown packaged LLM"):
        emovox_gguf.packaged_gguf("gpt-17")
    assert resolve_gguf(str(tmp_path), None, cache_dir=tmp_path) is None  # an ordinary model directory


def _fake_split_package(monkeypatch, tmp_path, parts: list[bytes], listed: str):
    for i, data in enumerate(parts):
        (tmp_path / f"part{i}").write_bytes(data)
    module = types.SimpleNamespace(
        EXPECTED_SHA256=listed, MODEL_NAME="model.gguf", chunk_paths=lambda: [tmp_path / f"part{i}" for i in range(len(parts))]
    )
    monkeypatch.setitem(sys.modules, "fake_gguf_parts", module)
    return PackagedGGUF("fake", "fake-dist", "a fake split package", assembler="fake_gguf_parts", install="pip install fake")


def test_split_packages_are_concatenated_in_order_and_checked(monkeypatch, tmp_path):
    parts = [b"GGUF-first-", b"second-", b"third"]
    whole = b"".join(parts)
    entry = _fake_split_package(monkeypatch, tmp_path, parts, hashlib.sha256(whole).hexdigest())
    out = emovox_gguf._assemble(entry, tmp_path / "work")
    assert out.read_bytes() == whole
    assert emovox_gguf._assemble(entry, tmp_path / "work") == out  # already there and intact: reused

    wrong = _fake_split_package(monkeypatch, tmp_path, parts[::-1], hashlib.sha256(whole).hexdigest())
    with pytest.raises(LLMError, match="not the listed"):
        emovox_gguf._assemble(wrong, tmp_path / "other")
    assert not list((tmp_path / "other").glob("*"))  # no half-assembled file left behind

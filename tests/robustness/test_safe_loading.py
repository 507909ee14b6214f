"""Safe loading: weights come only from safetensors; no file of a recognizer directory, a
checkpoint or the feature cache is ever unpickled; recognizer directories are validated.

The pickles planted here would create a marker file when unpickled (``__reduce__`` calls
``open(marker, "w")``), and ``torch.load``/``pickle`` are replaced by tripwires for the duration
of each load, so "refused" means "never handed to an unpickler", not "the unpickler happened
to refuse it".
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tone

from emovox.errors import EmovoxError, RecognizerError

SRC = Path(__file__).resolve().parents[2] / "src" / "emovox"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"weight": Planted(marker)}))
    return path


@pytest.fixture
def tripwires(monkeypatch):
    """Record every attempt to unpickle anything while the fixture is active."""
    calls: list[str] = []

    def trip(name):
        def f(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called on {args[:1]}")

        return f

    monkeypatch.setattr(torch, "load", trip("torch.load"))
    monkeypatch.setattr(pickle, "load", trip("pickle.load"))
    monkeypatch.setattr(pickle, "loads", trip("pickle.loads"))
    monkeypatch.setattr(pickle, "Unpickler", trip("pickle.Unpickler"))
    return calls


# --- the code base itself ----------------------------------------------------------------------


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _kw_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def _sources():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30, f"found only {len(files)} sources under {SRC}"
    for path in files:
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_no_source_file_can_unpickle():
    problems = []
    for path, tree in _sources():
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
            elif isinstance(node, ast.ImportFrom):
                bad = [node.module] if (node.module or "").split(".")[0] in PICKLE_MODULES else []
            else:
                bad = []
            problems += [f"{where}:{node.lineno}: imports {b}" for b in bad]
        for call in _calls(tree):
            name = _dotted(call.func)
            if name.endswith("torch.load") and not _kw_true(call, "weights_only"):
                problems.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            if name in {"np.load", "numpy.load"} and any(k.arg == "allow_pickle" for k in call.keywords):
                problems.append(f"{where}:{call.lineno}: np.load with allow_pickle")
            if _kw_true(call, "trust_remote_code"):
                problems.append(f"{where}:{call.lineno}: trust_remote_code=True runs code from a model directory")
            if name.endswith(("pd.read_pickle", "pandas.read_pickle")):
                problems.append(f"{where}:{call.lineno}: read_pickle")
    assert problems == []


def test_every_model_weight_load_insists_on_safetensors():
    """``from_pretrained`` falls back to pickled ``pytorch_model.bin`` unless told not to."""
    not_models = ("tokenizer", "config", "processor", "extractor")
    problems = []
    for path, tree in _sources():
        for call in _calls(tree):
            if not isinstance(call.func, ast.Attribute) or call.func.attr != "from_pretrained":
                continue
            receiver = _dotted(call.func.value).lower()
            if any(word in receiver for word in not_models):
                continue
            if not _kw_true(call, "use_safetensors"):
                problems.append(
                    f"{path.relative_to(SRC.parent)}:{call.lineno}: {_dotted(call.func)}(...) without use_safetensors=True"
                )
    assert problems == []


# --- recognizer directories --------------------------------------------------------------------


@pytest.fixture
def recognizer_copy(audio_recognizer_dir, tmp_path):
    out = tmp_path / "rec"
    shutil.copytree(audio_recognizer_dir, out)
    return out


def rehash(directory: Path) -> None:
    """Record the sha256 of the directory's files as they are now: a hand-made (or hostile) directory
    whose checksums agree, so the checks behind the checksum are what the test exercises."""
    from emovox.models.directory import owned_files, sha256_file

    path = directory / "emovox.json"
    info = json.loads(path.read_text())
    info["files"] = {str(p.relative_to(directory)): sha256_file(p) for p in owned_files(directory)}
    path.write_text(json.dumps(info))


BACKBONE = Path("branches") / "audio"


def test_a_flipped_byte_in_any_file_is_named_before_anything_is_loaded(recognizer_copy, tripwires):
    from emovox.inference.recognizer import Recognizer

    for rel in ("weights.safetensors", BACKBONE / "model.safetensors", BACKBONE / "config.json"):
        path = recognizer_copy / rel
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(RecognizerError, match=f"{path.name}: damaged or modified"):
            Recognizer.load(recognizer_copy)
        path.write_bytes(original)
    # truncated backbone weights: named as damaged, not "offline? download the model"
    weights = recognizer_copy / BACKBONE / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RecognizerError, match="model.safetensors: damaged or modified") as info:
        Recognizer.load(recognizer_copy)
    assert "Offline" not in str(info.value) and tripwires == []


def test_a_missing_file_is_named(recognizer_copy):
    from emovox.inference.recognizer import Recognizer

    (recognizer_copy / "weights.safetensors").unlink()
    with pytest.raises(RecognizerError, match="weights.safetensors: missing"):
        Recognizer.load(recognizer_copy)


def test_pickled_head_weights_are_never_unpickled(recognizer_copy, tmp_path, tripwires):
    from emovox.inference.recognizer import Recognizer

    marker = tmp_path / "UNPICKLED"
    (recognizer_copy / "weights.safetensors").unlink()
    plant_pickle(recognizer_copy / "weights.bin", marker)
    rehash(recognizer_copy)
    with pytest.raises(RecognizerError, match="weights.safetensors: missing"):
        Recognizer.load(recognizer_copy)
    plant_pickle(recognizer_copy / "weights.safetensors", marker)  # a pickle under the safetensors name
    rehash(recognizer_copy)
    with pytest.raises(RecognizerError, match="not a readable safetensors file"):
        Recognizer.load(recognizer_copy)
    assert not marker.exists() and tripwires == []


def test_pickled_backbone_weights_are_refused_without_unpickling_them(recognizer_copy, tmp_path, monkeypatch):
    from emovox.inference.recognizer import Recognizer

    marker = tmp_path / "UNPICKLED"
    (recognizer_copy / BACKBONE / "model.safetensors").unlink()
    plant_pickle(recognizer_copy / BACKBONE / "pytorch_model.bin", marker)
    rehash(recognizer_copy)
    with pytest.raises(EmovoxError):
        Recognizer.load(recognizer_copy)
    assert not marker.exists()


def test_pickled_backbone_weights_are_a_recognizer_error_and_never_reach_torch_load(recognizer_copy, tmp_path, tripwires):
    from emovox.inference.recognizer import Recognizer

    marker = tmp_path / "UNPICKLED"
    (recognizer_copy / BACKBONE / "model.safetensors").unlink()
    plant_pickle(recognizer_copy / BACKBONE / "pytorch_model.bin", marker)
    rehash(recognizer_copy)
    with pytest.raises(RecognizerError, match="pytorch_model.bin"):
        Recognizer.load(recognizer_copy)
    assert not marker.exists() and tripwires == []


def _edit_info(directory: Path, **changes) -> None:
    path = directory / "emovox.json"
    info = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            info.pop(k, None)
        else:
            info[k] = v
    path.write_text(json.dumps(info))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schema_version": 99}, "schema_version 99"),
        ({"schema_version": None}, "schema_version None"),
        ({"labels": ["high", "low", "sad"]}, "do not match|has shape"),
        ({"labels": ["high", "high"]}, "non-empty list of distinct names"),
        ({"labels": []}, "non-empty list of distinct names"),
        ({"kind": "pickle"}, "unknown model kind 'pickle'"),
        ({"files": None}, "'files' .* is missing"),
        ({"modality": "video"}, "unknown modality 'video'"),
    ],
)
def test_recognizer_directories_are_validated(recognizer_copy, change, message, tripwires):
    from emovox.inference.recognizer import Recognizer

    _edit_info(recognizer_copy, **change)
    with pytest.raises(RecognizerError, match=message):
        Recognizer.load(recognizer_copy)
    assert tripwires == []


def test_a_head_of_the_wrong_shape_is_named(recognizer_copy, tripwires):
    from safetensors.torch import load_file, save_file

    from emovox.inference.recognizer import Recognizer

    head = load_file(str(recognizer_copy / "weights.safetensors"))
    name = next(k for k, v in head.items() if v.ndim == 2)
    head[name] = torch.zeros(head[name].shape[0] + 1, head[name].shape[1])
    save_file(head, str(recognizer_copy / "weights.safetensors"))
    rehash(recognizer_copy)
    with pytest.raises(RecognizerError, match=f"tensor {name} has shape"):
        Recognizer.load(recognizer_copy)
    (recognizer_copy / "emovox.json").write_text("{not json")
    with pytest.raises(RecognizerError, match="not valid JSON"):
        Recognizer.load(recognizer_copy)
    assert tripwires == []


# --- checkpoints and the feature cache -----------------------------------------------------------


def test_a_pickle_in_place_of_a_checkpoint_is_refused_unread(tmp_path, tripwires):
    from emovox.config import TrainConfig
    from emovox.data.examples import Example
    from emovox.training.checkpoint import STATE_FILE
    from emovox.training.trainer import Trainer

    examples = [Example(f"u{i}", i % 2, length=1.0, cached={"x": torch.full((4,), float(i % 2))}) for i in range(8)]
    run = tmp_path / "run"

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, inputs):
            return self.lin(inputs["x"])

    collate = lambda b: {"x": torch.stack([e.cached["x"] for e in b])}  # noqa: E731
    cfg = TrainConfig(max_epochs=2, patience=2, batch_size=4, lr=0.1)
    Trainer(Lin(), collate, cfg, 2, run_dir=run, progress=False).fit(examples, examples[:4])
    state = json.loads((run / STATE_FILE).read_text())
    marker = tmp_path / "UNPICKLED"
    plant_pickle(run / state["optimizer_file"], marker)
    with pytest.raises(EmovoxError, match="cannot resume"):
        Trainer(Lin(), collate, cfg, 2, run_dir=run, progress=False).fit(examples, examples[:4])
    assert not marker.exists() and tripwires == []


def test_a_pickle_in_the_feature_cache_is_recomputed_unread(tmp_path, tripwires):
    from emovox.backbones.loader import load_backbone
    from emovox.cache import FeatureCache, item_key
    from emovox.data.examples import Example
    from emovox.models.extraction import extract_pooled
    from emovox.models.extraction import pooled_cache_key as backbone_key

    backbone = load_backbone("wav2vec2-base", tiny=True)
    clip = tone(300, 0.5)
    examples = [Example("a", 0, audio=clip, length=0.5)]
    cache = FeatureCache(tmp_path / "cache")
    key = backbone_key(backbone, tiny=True, seed=0)
    first = extract_pooled(backbone, examples, cache=cache, model_key=key, progress=False)
    entry = cache._path(key, item_key(clip))
    assert entry.is_file()
    marker = tmp_path / "UNPICKLED"
    plant_pickle(entry, marker)
    again = extract_pooled(backbone, examples, cache=cache, model_key=key, progress=False)
    assert torch.equal(first, again) and not marker.exists() and tripwires == []

"""Tiny trained recognizers shared by the predict/serve/export tests.

Each recognizer is trained once per test session (``train_recognizer`` on a synthetic corpus of
tones: "high" clips at ~520 Hz, "low" clips at ~180 Hz, four speakers), so tests exercise the
real path from a recognizer directory on disk to predictions. The tones make the classes
learnable, which lets tests check that predictions are right, not just well-formed.

Import the fixtures you need into a test module: ``from recognizer_fixtures import audio_recognizer_dir``.
Building is cached per session across modules (pytest would otherwise build one per importing module).
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TONES = {"high": 520.0, "low": 180.0}
TEXTS = {"high": ["what a wonderful surprise", "I am so happy today"], "low": ["I feel sad and tired", "nothing works out for me"]}


def tone(freq: float, seconds: float, *, sr: int = 16_000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sr: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr, subtype="PCM_16")
    return path


def make_tone_manifest(root: Path, speakers: int = 4, per_class: int = 3) -> Path:
    rows = []
    for s in range(speakers):
        for label, freq in TONES.items():
            for k in range(per_class):
                rel = f"wav/spk{s}_{label}_{k}.wav"
                write_wav(root / rel, tone(freq * (1 + 0.03 * s), 0.4 + 0.05 * k, amplitude=0.2 + 0.05 * k))
                rows.append({"path": rel, "label": label, "speaker": f"spk{s}", "text": TEXTS[label][k % 2]})
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "speaker", "text"])
        w.writeheader()
        w.writerows(rows)
    return path


def train_tiny(root: Path, backbone: str, **model) -> Path:
    """Train a tiny recognizer on the tone manifest under ``root``; returns its directory."""
    from emovox.config import config_from_dict
    from emovox.training.final import train_recognizer

    manifest = make_tone_manifest(root / "corpus")
    train = model.pop("train", {})
    cfg = config_from_dict(
        {
            "name": f"tiny-{backbone}",
            "corpus": f"manifest:{manifest}",
            "protocol": "speaker-groups:4",
            "cache_dir": str(root / "cache"),
            "model": {"backbone": backbone, "tiny": True, "mode": "frozen", **model},
            "train": {"lr": 0.05, "batch_size": 8, "max_epochs": 15, "patience": 15, "threads": 1, **train},
        }
    )
    out = root / "recognizer"
    train_recognizer(cfg, out, progress=False)
    return out


_BUILT: dict[str, Path] = {}
_LOCK = threading.Lock()

RECIPES = {
    # frozen wav2vec2 linear probe on cached features: the "frozen-features" kind
    "audio": ("wav2vec2-base", {}),
    # frozen Whisper encoder with learned attention pooling: the "end-to-end" kind
    "whisper": ("whisper-base", {"pooling": "attention", "train": {"max_epochs": 8, "lr": 0.02}}),
    # a transcript recognizer
    "text": ("bert-base", {}),
}


def built(kind: str, factory: pytest.TempPathFactory) -> Path:
    with _LOCK:
        if kind not in _BUILT:
            backbone, model = RECIPES[kind]
            _BUILT[kind] = train_tiny(factory.mktemp(f"rec-{kind}"), backbone, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in model.items()})
        return _BUILT[kind]


@pytest.fixture(scope="session")
def audio_recognizer_dir(tmp_path_factory) -> Path:
    return built("audio", tmp_path_factory)


@pytest.fixture(scope="session")
def whisper_recognizer_dir(tmp_path_factory) -> Path:
    return built("whisper", tmp_path_factory)


@pytest.fixture(scope="session")
def text_recognizer_dir(tmp_path_factory) -> Path:
    return built("text", tmp_path_factory)

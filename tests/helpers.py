"""Helpers every test module may import: synthetic tone corpora, WAV files and tiny configs.

Two classes told apart by pitch ("high" clips at ~520 Hz, "low" at ~180 Hz) and a sentence per
class make a corpus that tiny random models learn offline in seconds, so tests exercise real
runs end to end and can check that predictions are right, not just well-formed. Fixtures live in
``conftest.py``; this module holds plain functions only.
"""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SR = 16_000
TONES = {"high": 520.0, "low": 180.0}
TEXTS = {"high": ["what a wonderful surprise", "I am so happy today"], "low": ["I feel sad and tired", "nothing works out for me"]}
#: EmoDB's three smallest speakers (43, 38 and 35 clips), each with every one of the 7 classes: the real-audio
#: cross-validation tests run on them (``emodb_small`` in conftest.py), so their Whisper-base features are
#: extracted once per session.
EMODB_SMALL_SPEAKERS = ("09", "10", "12")


def tone(freq: float, seconds: float, amplitude: float = 0.3, *, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr, subtype=subtype)
    return path


def make_tone_manifest(root: Path, speakers: int = 4, per_class: int = 3) -> Path:
    """A manifest of tone clips with transcripts, ``speakers`` speakers, ``per_class`` clips per class each."""
    rows = []
    for s in range(speakers):
        for label, freq in TONES.items():
            for k in range(per_class):
                rel = f"wav/spk{s}_{label}_{k}.wav"
                write_wav(root / rel, tone(freq * (1 + 0.03 * s), 0.4 + 0.05 * k, amplitude=0.2 + 0.05 * k))
                rows.append({"path": rel, "label": label, "speaker": f"spk{s}", "text": TEXTS[label][k % 2]})
    return write_manifest(root / "manifest.csv", rows, ("path", "label", "speaker", "text"))


def tone_rows(
    root: Path, speakers: int = 4, per_class: int = 3, seconds: float = 0.3, labels: dict[str, float] | None = None
) -> list[dict]:
    """Rows (with ids) of a tone corpus written under ``root``; low before high unless ``labels`` says otherwise."""
    rows = []
    for s in range(speakers):
        for label, freq in (labels or {"low": 180.0, "high": 520.0}).items():
            for k in range(per_class):
                rel = f"wav/spk{s}_{label}_{k}.wav"
                write_wav(root / rel, tone(freq * (1 + 0.03 * s), seconds + 0.05 * k, 0.2 + 0.05 * k))
                rows.append(
                    {"id": f"spk{s}_{label}_{k}", "path": rel, "label": label, "speaker": f"spk{s}", "text": f"{label} words number {k}"}
                )
    return rows


def write_manifest(path: Path, rows: list[dict], fields: tuple[str, ...] = ("id", "path", "label", "speaker", "text")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def tiny_config(manifest: Path, cache: Path, *, model: dict | None = None, train: dict | None = None, **top) -> dict:
    """A frozen tiny wav2vec2 linear probe over 4 speaker groups: a full run takes seconds."""
    return {
        "name": "robust",
        "corpus": f"manifest:{manifest}",
        "protocol": "speaker-groups:4",
        "validation": "strict",
        "cache_dir": str(cache),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", **(model or {})},
        "train": {"lr": 0.01, "batch_size": 4, "max_epochs": 3, "patience": 3, "threads": 1, **(train or {})},
        "baseline": False,
        **top,
    }


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
            # length augmentation is tested on its own (tests/test_augment.py); on 0.4 s synthetic tones its silence
            # padding swamps what a tiny random model can tell apart, and these recognizers test deployment
            "train": {"lr": 0.05, "batch_size": 8, "max_epochs": 15, "patience": 15, "threads": 1,
                      "augment": {"length": False}, **train},
        }
    )
    out = root / "recognizer"
    train_recognizer(cfg, out, progress=False)
    return out


def tiny_frozen_classifier(augment, labels: tuple[str, ...] = ("a", "b")):
    """A frozen classifier over a tiny random wav2vec2 (every layer), with ``augment`` (an
    ``AugmentConfig``) as its run's training augmentation; seeded, so two are identical."""
    import torch

    from emovox.backbones.loader import load_backbone
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    config = ClassifierConfig(backbone="wav2vec2-base", tiny=True, mode="frozen", layers="all")
    torch.manual_seed(0)  # the tiny backbone's and the head's initial weights
    model = ClassifierModel(config, list(labels), load_backbone("wav2vec2-base", tiny=True))
    model.augment = augment
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_dir: Path, *options: str, log: Path):
    """``emovox serve`` in a subprocess on a free local port; always terminated."""
    port = free_port()
    cmd = [sys.executable, "-c", "from emovox.cli import main; main()", "serve", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *options]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    import httpx

    try:
        deadline = time.monotonic() + 120  # a cold start imports torch and transformers
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /health within 120 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""Shared test set-up: never reach the network, and find the shared assets beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import train_tiny

# Tests must never download from a hub: fail fast and clearly instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))
EMODB = SHARED / "data" / "emodb"
WHISPER_BASE = SHARED / "models" / "whisper-base"
MELD = SHARED / "data" / "meld"


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    if not (EMODB / "wav").is_dir():
        pytest.skip(f"EmoDB test copy not found at {EMODB} (set EMOVOX_SHARED to the shared/ folder)")
    return EMODB


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    if not (WHISPER_BASE / "config.json").is_file():
        pytest.skip(f"Whisper-base not found at {WHISPER_BASE} (set EMOVOX_SHARED to the shared/ folder)")
    return WHISPER_BASE


@pytest.fixture(scope="session")
def meld_dir() -> Path:
    if not (MELD / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD transcripts not found at {MELD} (set EMOVOX_SHARED to the shared/ folder)")
    return MELD


# --- tiny trained recognizers, each built once per session on first use ----------------------------


@pytest.fixture(scope="session")
def audio_recognizer_dir(tmp_path_factory) -> Path:
    """A frozen tiny wav2vec2 probe on cached features, trained on the tone corpus."""
    return train_tiny(tmp_path_factory.mktemp("rec-audio"), "wav2vec2-base")


@pytest.fixture(scope="session")
def whisper_recognizer_dir(tmp_path_factory) -> Path:
    """A frozen tiny Whisper encoder with learned attention pooling (the backbone runs while training)."""
    return train_tiny(
        tmp_path_factory.mktemp("rec-whisper"), "whisper-base", pooling="attention", train={"max_epochs": 8, "lr": 0.02}
    )


@pytest.fixture(scope="session")
def text_recognizer_dir(tmp_path_factory) -> Path:
    """A transcript recognizer (tiny BERT)."""
    return train_tiny(tmp_path_factory.mktemp("rec-text"), "bert-base")


@pytest.fixture(scope="session")
def pseudo_corpora(emodb_dir, tmp_path_factory) -> dict[str, str]:
    """Three small corpora made of real EmoDB clips (``corpus_fixtures.make_pseudo_corpora``): their specs by name."""
    from corpus_fixtures import make_pseudo_corpora

    return make_pseudo_corpora(emodb_dir, tmp_path_factory.mktemp("pseudo-corpora"))

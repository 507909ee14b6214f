"""Shared test set-up: never reach the network, and find the shared assets beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tiny trained recognizers: session fixtures for every test module (each built once, on first use);
# test modules take them as arguments and never import them. (No hub library is imported here.)
from recognizer_fixtures import audio_recognizer_dir, text_recognizer_dir, whisper_recognizer_dir  # noqa: F401

# Tests must never download from a hub: fail fast and clearly instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))
EMODB = SHARED / "data" / "emodb"
WHISPER_BASE = SHARED / "models" / "whisper-base"


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

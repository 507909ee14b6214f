"""Builders for the robustness suite: bad files, sparse long recordings, the CLI in a child process.

The corpus is the one the runner tests use (two classes told apart by pitch, one speaker per
group) so that every run here is a real end-to-end run of a tiny model, offline, in seconds.
Bad files are written byte by byte the way they occur in the wild: an interrupted copy, a text
file with a .wav name, a container libsndfile cannot read, a float WAV holding NaN.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import tone, write_wav
from torch import nn

from emovox.data.examples import Example

SR = 16_000

#: The command line of ``emovox`` in a child process (the console script's ``main``).
EMOVOX = [sys.executable, "-c", "from emovox.cli import main; main()"]


def run_emovox(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EMOVOX, *args], capture_output=True, text=True, timeout=timeout)


# --- bad files ------------------------------------------------------------------------------


def bad_empty_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def bad_zero_frames(path: Path) -> Path:
    return write_wav(path, np.zeros(0, dtype=np.float32))


def bad_not_audio(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,label\nthis is a CSV saved with a .wav name\n")
    return path


def bad_unsupported_format(path: Path) -> Path:
    """The start of an MP4/M4A container (AAC audio), which libsndfile does not decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ftyp = struct.pack(">I", 24) + b"ftypM4A " + struct.pack(">I", 0) + b"M4A isom"
    mdat = struct.pack(">I", 8 + 4096) + b"mdat" + bytes(range(256)) * 16
    path.write_bytes(ftyp + mdat)
    return path


def bad_corrupt_header(path: Path) -> Path:
    """A RIFF/WAVE file whose fmt chunk is garbage (a disk or transfer error in the header)."""
    good = write_wav(path, tone(300, 0.5))
    data = bytearray(good.read_bytes())
    data[20:36] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


def bad_truncated(path: Path) -> Path:
    """An interrupted copy: the header promises 1 s, the file holds half of it."""
    good = write_wav(path, tone(300, 1.0))
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def bad_non_finite(path: Path) -> Path:
    x = tone(300, 0.5)
    x[4000] = np.nan
    return write_wav(path, x, subtype="FLOAT")


def bad_too_short(path: Path, seconds: float = 0.05) -> Path:
    return write_wav(path, tone(300, seconds))


#: name -> (writer, what the message must say). Each is an ``AudioError`` naming the file.
BAD_AUDIO = {
    "missing": (lambda p: p, "not found"),
    "empty": (bad_empty_file, "cannot be read as audio"),
    "zero_frames": (bad_zero_frames, "zero samples"),
    "not_audio": (bad_not_audio, "cannot be read as audio"),
    "unsupported_format": (bad_unsupported_format, "cannot be read as audio"),
    "corrupt": (bad_corrupt_header, "cannot be read as audio"),
    "truncated": (bad_truncated, "truncated"),
    "non_finite": (bad_non_finite, "non-finite"),
    "too_short": (bad_too_short, "shorter than the 0.1 s minimum"),
}


def sparse_long_wav(path: Path, seconds: float, sr: int = SR) -> Path:
    """A valid 16-bit mono WAV of ``seconds`` of silence, written as a sparse file.

    An hour of audio costs no disk and no time to create, so a test can show that cropping to
    ``max_seconds`` reads only the start instead of decoding 115 MB.
    """
    frames = int(seconds * sr)
    data_bytes = frames * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(header)
        # a little real signal first, so the cropped part is not all zeros
        f.write((tone(440, 1.0) * 32767).astype("<i2").tobytes())
        f.seek(len(header) + data_bytes - 1)
        f.write(b"\0")
    return path


# --- a toy model for the trainer's checkpoint tests --------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, inputs):
        return self.body(inputs["x"])


def collate(batch):
    return {"x": torch.stack([e.cached["x"] for e in batch])}


def blobs(n: int, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(7)) * 2
    return [Example(f"u{seed}_{i}", i % 3, length=float(i % 5), cached={"x": centers[i % 3] + torch.randn(8, generator=g)}) for i in range(n)]

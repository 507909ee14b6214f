"""Load any audio file as the one signal every model expects: float32, mono, 16 kHz.

Corpora arrive in every shape (44.1 kHz stereo RAVDESS, 16 kHz IEMOCAP, 24-bit studio takes,
MP3s scraped from YouTube), and a bad file deep inside a training run should stop it with a
message that names the file, not with a libsndfile traceback three epochs in. So this module
is the only place that decodes audio, and it checks what it decodes.

Memory: files are decoded block by block; each block is averaged to mono and fed through a
streaming soxr resampler before the next one is read, so peak memory is about the 16 kHz mono
result plus one block, whatever the source rate or channel count. A segment (``start``/``end``)
seeks to its first frame and reads only its own frames, so cutting 3 s out of a one-hour
recording never touches the rest of it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from emovox.errors import AudioError, TooShortError

if TYPE_CHECKING:  # imported for annotations only: audio must not depend on the corpus layer
    pass

#: The sample rate every backbone in emovox consumes.
SAMPLE_RATE = 16_000

#: The shortest clip emovox accepts anywhere (training, ``evaluate``, ``predict``, ``timeline``,
#: ``serve``): 0.1 s is a fifth of a syllable, too short to carry emotion, and shorter than the
#: receptive field of the convolutional front ends, which would fail (or return noise) on it.
MIN_SECONDS = 0.1

#: Frames decoded per block. Small enough that a block of 8-channel float audio stays well
#: under a few MB; large enough that the per-block Python overhead is negligible.
BLOCK_FRAMES = 1 << 16

#: A segment may end this many seconds past the end of the file (rounding in manifests and
#: annotation tools); it is then clipped to the file. Further than that is an error.
END_TOLERANCE_S = 0.1

# libsndfile's log for a WAV whose data chunk promises more bytes than the file holds:
# "data : 264600 (should be 132278)".
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers that never go back to fix the header write one of these as the data size.
_UNKNOWN_LENGTH = {0, 0xFFFFFFFF, 0x7FFFFFFF}

PathLike = str | os.PathLike


def audio_duration(path: PathLike) -> float:
    """Duration in seconds from the file header, without decoding any audio (cheap)."""
    p = _existing_file(path)
    info = _info(p)
    _check_not_truncated(p, info)
    return info.frames / info.samplerate


def load_audio(
    path: PathLike,
    start: float | None = None,
    end: float | None = None,
    *,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Decode ``path`` (or its ``[start, end]`` segment, in seconds) to float32 mono at ``sample_rate``.

    Any rate, bit depth and channel count libsndfile reads (WAV, FLAC, OGG, MP3, ...) is
    accepted; channels are averaged. Raises ``AudioError`` naming the file when it is missing,
    not audio, corrupt or truncated, holds no samples, or holds NaN/inf samples.
    """
    p = _existing_file(path)
    info = _info(p)
    _check_not_truncated(p, info)
    if info.frames <= 0:
        raise AudioError(f"{p}: the audio file holds zero samples; remove it from the corpus or re-export it")
    first, count = _frame_range(p, info, start, end)
    try:
        with sf.SoundFile(str(p)) as f:
            if first:
                f.seek(first)
            mono = _read_mono_resampled(p, f, count, sample_rate)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{p}: the audio data is corrupt or truncated ({_reason(exc)}); re-export or remove the file") from None
    if mono.size == 0:
        raise AudioError(f"{p}: the audio file holds zero samples; remove it from the corpus or re-export it")
    return mono


def too_short_message(name: str, samples: int, sample_rate: int = SAMPLE_RATE) -> str:
    """The one message for a clip under ``MIN_SECONDS``, whichever command meets it."""
    return f"{name}: {samples / sample_rate:.3f} s of audio is too short, shorter than the {MIN_SECONDS:g} s minimum"


def check_min_duration(clip: np.ndarray, name: str, sample_rate: int = SAMPLE_RATE, *, hint: str = "") -> np.ndarray:
    """``clip`` unchanged, or ``TooShortError`` (``too_short_message`` + ``hint``) when it is under ``MIN_SECONDS``."""
    if len(clip) < round(MIN_SECONDS * sample_rate):
        raise TooShortError(too_short_message(name, len(clip), sample_rate) + hint)
    return clip


# --- internals ---------------------------------------------------------------------------


def _existing_file(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise AudioError(f"{p}: audio file not found; check the path (relative paths in manifests are relative to the manifest)")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    return p


def _reason(exc: BaseException) -> str:
    """libsndfile's own explanation, without the ``Error opening 'path':`` prefix that repeats the name."""
    text = str(exc).strip()
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def _info(p: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(
            f"{p}: cannot be read as audio ({_reason(exc)}); it is not an audio file libsndfile "
            "understands (WAV, FLAC, OGG, MP3, ...) or it is corrupt"
        ) from None


def _check_not_truncated(p: Path, info: sf._SoundFileInfo) -> None:
    """A WAV cut short (interrupted copy or download) still opens; its header gives it away."""
    m = _SHORT_DATA.search(info.extra_info or "")
    if m is None:
        return
    declared, actual = int(m.group(1)), int(m.group(2))
    if declared in _UNKNOWN_LENGTH or declared <= actual:
        return
    raise AudioError(
        f"{p}: the file is truncated (its header announces {declared} bytes of audio but only {actual} "
        "are present); copy or download it again"
    )


def _frame_range(p: Path, info: sf._SoundFileInfo, start: float | None, end: float | None) -> tuple[int, int]:
    """First frame and frame count of the requested segment, validated against the file."""
    sr, total = info.samplerate, info.frames
    duration = total / sr
    if start is None and end is None:
        return 0, total
    s = 0.0 if start is None else float(start)
    e = duration if end is None else float(end)
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e <= s:
        raise AudioError(f"{p}: invalid segment [{start}, {end}] s; need 0 <= start < end")
    if s >= duration:
        raise AudioError(f"{p}: segment [{s:g}, {e:g}] s starts after the end of the file ({duration:.3f} s)")
    if e > duration + END_TOLERANCE_S:
        raise AudioError(f"{p}: segment [{s:g}, {e:g}] s ends after the end of the file ({duration:.3f} s)")
    first = min(int(round(s * sr)), total)
    last = min(int(round(e * sr)), total)
    if last <= first:
        raise AudioError(f"{p}: segment [{s:g}, {e:g}] s is shorter than one sample")
    return first, last - first


def _read_mono_resampled(p: Path, f: sf.SoundFile, count: int, sample_rate: int) -> np.ndarray:
    """Decode ``count`` frames from the current position, block by block, into 16 kHz mono."""
    in_rate = f.samplerate
    resampler = soxr.ResampleStream(in_rate, sample_rate, 1, dtype="float32") if in_rate != sample_rate else None
    # soxr yields round(n * out / in) samples in total; a little headroom avoids any regrowth.
    out = np.empty(int(math.ceil(count * sample_rate / in_rate)) + 64, dtype=np.float32)
    filled = 0
    block = np.empty((min(BLOCK_FRAMES, count), f.channels), dtype=np.float32)
    offset_s = f.tell() / in_rate
    done = 0
    while done < count:
        want = min(count - done, len(block))
        got = f.read(want, dtype="float32", always_2d=True, out=block[:want])
        if len(got) == 0:
            break
        mono = np.ascontiguousarray(got[:, 0]) if f.channels == 1 else got.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            where = offset_s + (done + int(np.flatnonzero(~np.isfinite(mono))[0])) / in_rate
            raise AudioError(
                f"{p}: holds non-finite samples (NaN or inf), first at {where:.3f} s; the file is corrupt, re-export it"
            )
        done += len(got)
        chunk = mono if resampler is None else resampler.resample_chunk(mono, last=done >= count)
        out, filled = _append(out, filled, chunk)
    if done < count:
        # MP3 headers without a frame table only estimate the length; any other format is cut short.
        if f.format != "MP3":
            raise AudioError(
                f"{p}: the audio data ends {(count - done) / in_rate:.3f} s before its header says; "
                "the file is truncated, copy or download it again"
            )
        if resampler is not None:
            out, filled = _append(out, filled, resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    return out[:filled]


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    if filled + len(chunk) > len(out):  # never expected; keeps correctness if soxr ever emits more
        out = np.concatenate([out[:filled], np.empty(len(chunk) + 64, np.float32)])
    out[filled : filled + len(chunk)] = chunk
    return out, filled + len(chunk)

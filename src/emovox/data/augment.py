"""Training-time audio augmentation: deterministic under the seed, never applied to evaluation.

The first purpose is length invariance. Many public corpus copies are cut or padded to one clip
length, and a model trained on them learns that length: a frozen Whisper's pooled states depend
on how long the clip is and how much silence it holds, so a probe trained on 2.0 s clips answered
one class at p = 1.000 for clips of 1.9 s or 2.1 s (issue 9). Showing the model random crops and
silence-padded copies of its training clips teaches it to ignore the length. The second purpose is
the usual regularisation of fine-tuning: speed perturbation (0.9/1.0/1.1, resampled with soxr),
additive noise at a random SNR, and SpecAugment-style masks on Whisper log-mels.

Every random choice comes from a generator seeded by (seed, epoch or variant, utterance id), so a
run is reproducible, resumes identically, and the same clip gets different views in different
epochs. Frozen branches cannot augment on the fly (their features are cached), so they precompute
``variants`` augmented copies of every clip, cached like any feature, and each epoch picks one view
per clip (the original included); see ``emovox.models.branch``.

Defaults, measured on EmoDB with frozen Whisper-base (training on a copy cut to 2.0 s, testing on
the original 1.2-9.0 s clips, leave-one-speaker-out): one augmented copy per clip (a random crop
keeping 60-100 % of it, then silence adding 0-150 % of the cropped length, split at random between
start and end) takes a linear probe from 13 % to 85 % accuracy on the original clips, keeps the
label of 96-98 % of clips under 0.1 s of added silence or a 90 % crop, holds accuracy at 4 s of
padding within 4 points, and leaves no wrong answer at p > 0.99 (98 % of them were); a second copy
adds little. Accuracy on unmodified clips is unchanged (+-1 point).
"""

from __future__ import annotations

import zlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from emovox.audio import MIN_SECONDS, SAMPLE_RATE


class AugmentConfig(BaseModel):
    """``train.augment``: what training clips go through (evaluation never augments)."""

    model_config = ConfigDict(extra="forbid")

    length: bool = Field(True, description="Random crops and silence padding of training clips (length invariance).")
    crop: tuple[float, float] = Field(
        (0.6, 1.0), description="Fraction of the clip kept by a random contiguous crop (min, max); (1, 1) = no crop."
    )
    pad: tuple[float, float] = Field(
        (0.0, 1.5),
        description="Silence added, as a fraction of the cropped clip's length, split at random between start and end.",
    )
    variants: int = Field(1, ge=0, description="Frozen branches: augmented copies of every clip precomputed and cached.")
    speed: list[float] = Field(
        default_factory=list, description="Speed factors to draw from, e.g. [0.9, 1.0, 1.1] (none by default)."
    )
    noise_snr_db: tuple[float, float] | None = Field(
        None, description="White noise at a random SNR in this range (dB); off by default."
    )
    specaugment: bool = Field(False, description="Fine-tuned Whisper branches: time and frequency masks on the log-mel input.")
    mixup: float = Field(
        0.0,
        ge=0,
        description="Mixup's Beta(alpha, alpha) parameter; 0 = off. Mixes the embeddings the head reads (manifold "
        "mixup, Verma et al. 2019) and the two labels' losses, so it works for every modality and branch mix "
        "(text token ids cannot be mixed as inputs). Gradient-trained heads only.",
    )

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("crop is (min, max) with 0 < min <= max <= 1")
        return v

    @field_validator("pad")
    @classmethod
    def _pad(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError("pad is (min, max) with 0 <= min <= max")
        return v

    @property
    def active(self) -> bool:
        """Whether any waveform augmentation is on."""
        return self.length or bool(self.speed) or self.noise_snr_db is not None


def rng_for(seed: int, uid: str, salt: int) -> np.random.Generator:
    """The generator of one clip's augmentation: a pure function of (seed, salt, utterance id)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(salt) & 0xFFFFFFFF, zlib.crc32(uid.encode("utf-8"))])


def augment_audio(clip: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One augmented view of a 16 kHz clip: speed, crop, silence padding, noise (each if configured)."""
    x = np.asarray(clip, dtype=np.float32)
    if cfg.speed:
        factor = float(rng.choice(cfg.speed))
        if factor != 1.0 and len(x) > 1:
            import soxr

            # played ``factor`` times faster: resample as if recorded at rate / factor
            x = soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)
    if cfg.length:
        keep = int(round(len(x) * rng.uniform(*cfg.crop)))
        keep = min(len(x), max(keep, int(MIN_SECONDS * SAMPLE_RATE)))
        start = int(rng.integers(0, len(x) - keep + 1))
        x = x[start : start + keep]
        pad = int(round(rng.uniform(*cfg.pad) * len(x)))
        before = int(rng.integers(0, pad + 1))
        x = np.concatenate([np.zeros(before, np.float32), x, np.zeros(pad - before, np.float32)])
    if cfg.noise_snr_db is not None:
        power = float(np.mean(x**2)) or 1e-8
        snr = rng.uniform(*cfg.noise_snr_db)
        x = x + rng.standard_normal(len(x)).astype(np.float32) * np.float32(np.sqrt(power / 10 ** (snr / 10)))
    return x.astype(np.float32, copy=False)


def spec_augment(features, rng: np.random.Generator, *, time_masks: int = 2, time_width: float = 0.05,
                 freq_masks: int = 2, freq_width: int = 8, lengths=None):
    """SpecAugment masks on a ``[B, mel, frames]`` log-mel batch (in place on a copy): ``time_masks`` spans of
    up to ``time_width`` of each clip's real frames and ``freq_masks`` bands of up to ``freq_width`` bins,
    set to the clip's mean (Whisper's log-mels have no natural zero)."""
    import torch

    out = features.clone()
    batch, mels, frames = out.shape
    for b in range(batch):
        real = int(lengths[b]) if lengths is not None else frames
        fill = out[b, :, :real].mean()
        for _ in range(freq_masks):
            w = int(rng.integers(0, freq_width + 1))
            f0 = int(rng.integers(0, max(1, mels - w)))
            out[b, f0 : f0 + w, :real] = fill
        for _ in range(time_masks):
            w = int(rng.integers(0, max(1, int(time_width * real)) + 1))
            t0 = int(rng.integers(0, max(1, real - w)))
            out[b, :, t0 : t0 + w] = fill
    return out if isinstance(out, torch.Tensor) else out

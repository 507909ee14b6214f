"""openSMILE functionals as a backbone: the hand-crafted row every speech-emotion paper reports.

eGeMAPSv02 (88 features, Eyben et al. 2016) and ComParE_2016 (6,373 features, Schuller et al.
2016) are computed by audEERING's ``opensmile`` package, which carries its own compiled
openSMILE and config files (nothing is downloaded at run time). Extraction is numpy in, numpy
out: no torch model runs, so it costs a few milliseconds of one core per second of audio.

Everything above a backbone sees the functionals the way it sees a neural encoder, so the cache,
the standardisation (with its floor), ``head: logistic``, the baseline, ``emovox train`` and
``predict`` work unchanged:

- ``preprocess`` runs openSMILE on each clip (the feature extractor *is* the preprocessing, as a
  log-mel is Whisper's), ``forward`` returns the vector as one "layer" of one "frame": hidden
  states ``[B, 1, D]`` (``[1, B, 1, D]`` with every layer), so per-layer pooled states are
  ``[N, 1, D]`` and their mean is exactly openSMILE's output (float32, unchanged).
- Only ``mode: frozen`` makes sense (nothing trains), and ``layers``/``pooling`` have one value
  (``emovox.models.branch`` refuses the rest with a ``ConfigError``).
- The clip emovox decoded (mono float32 at 16 kHz, cropped to ``max_seconds``) is what openSMILE
  reads, at 16 kHz: openSMILE processes the rate it is given, and every band these two configs
  measure ends at or below 8 kHz (``hifreq = 8000``; eGeMAPS' formants search 0-5 kHz), the
  16 kHz Nyquist frequency. On a 16 kHz file this equals ``Smile.process_file`` exactly (tested).
  Samples are clipped to the 16-bit range first: openSMILE converts floats to int16 by
  ``x * 32768`` without saturation, so a resampled peak above 1.0 would wrap to a negative sample.

A saved backbone has no weights: its sidecar (``emovox_backbone.json``) records the feature set,
the opensmile version, and the features of a fixed synthetic signal (``reference_signal``). A
recognizer loaded where another opensmile version is installed recomputes those features: if
they differ it is refused (its head would read features it was never trained on), naming the
version to install; if they agree it loads with a warning (one signal agreeing does not prove
every clip does).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import torch
from torch import nn

from emovox.audio import SAMPLE_RATE
from emovox.backbones.audio import checked_clips
from emovox.backbones.base import Backbone, Encoded
from emovox.backbones.registry import EMOVOX_FILE, OPENSMILE_PREFIX, BackboneSpec
from emovox.errors import AudioError, BackboneError, EmovoxWarning

#: The one openSMILE level emovox reads: one vector of statistics per clip.
FEATURE_LEVEL = "Functionals"
#: openSMILE's longest analysis window (60 ms, its pitch frames): shorter clips give NaN functionals.
MIN_SAMPLES = 960
#: A saved recognizer's reference features must agree this closely with the installed opensmile's.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-4, 1e-6
_INT16_MAX = 32767 / 32768
_INSTALL = "pip install 'emovox[opensmile]' (or pip install opensmile)"


class OpenSmileVersionWarning(EmovoxWarning):
    """A recognizer trained with another opensmile version: its features agree on the reference signal."""


def installed_version() -> str | None:
    """The installed opensmile package's version, or None when it is not installed."""
    try:
        return metadata.version("opensmile")
    except metadata.PackageNotFoundError:
        return None


def _feature_sets() -> list[str]:
    import opensmile

    return [m.name for m in opensmile.FeatureSet]


@functools.cache
def _smile(feature_set: str):
    """One ``opensmile.Smile`` per feature set and process (building one parses its config files)."""
    try:
        import opensmile
    except ImportError:
        raise BackboneError(f"openSMILE feature set '{feature_set}' needs the opensmile package: {_INSTALL}") from None
    if feature_set not in opensmile.FeatureSet.__members__:
        raise BackboneError(
            f"'{feature_set}' is not an openSMILE feature set; the opensmile package has: {', '.join(_feature_sets())}"
        )
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[FEATURE_LEVEL]
    )


@dataclass(frozen=True)
class SmileExtractor:
    """openSMILE functionals of one feature set: a 16 kHz clip in, ``[D]`` float32 out (numpy only).

    Only names are held (the ``Smile`` object is cached per process), so the extractor pickles and
    copies freely.
    """

    feature_set: str
    version: str

    @classmethod
    def installed(cls, feature_set: str) -> SmileExtractor:
        version = installed_version()
        if version is None:
            raise BackboneError(f"openSMILE feature set '{feature_set}' needs the opensmile package: {_INSTALL}")
        _smile(feature_set)  # a wrong name fails here, before any audio is read
        return cls(feature_set, version)

    @property
    def names(self) -> list[str]:
        return list(_smile(self.feature_set).feature_names)

    @property
    def num_features(self) -> int:
        return int(_smile(self.feature_set).num_features)

    def identity(self) -> dict:
        """What fixes the features besides the audio: the feature cache keys on it."""
        return {"source": OPENSMILE_PREFIX + self.feature_set, "opensmile": self.version,
                "feature_level": FEATURE_LEVEL, "sample_rate": SAMPLE_RATE}

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        clip = np.clip(np.asarray(clip, dtype=np.float32), -1.0, _INT16_MAX)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Segment too short, filling with NaN": checked below
            out = _smile(self.feature_set).process_signal(clip, SAMPLE_RATE).to_numpy(dtype=np.float32)
        if out.shape != (1, self.num_features) or not np.isfinite(out).all():
            raise AudioError(
                f"openSMILE {self.feature_set} gave {'non-finite' if out.shape[0] == 1 else out.shape[0]} functionals "
                f"for a clip of {clip.size / SAMPLE_RATE:.3f} s; it needs at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms "
                "of audio"
            )
        return out[0]


def reference_signal() -> np.ndarray:
    """1.5 s of a synthetic voice at 16 kHz, the same on every machine: a harmonic tone whose pitch
    glides 80-200 Hz under three formant-like resonances, in syllable-like bursts with a pause, over
    integer-generated noise (no RNG whose stream could change between numpy versions)."""
    n = int(1.5 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140.0 + 60.0 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = np.zeros(n)
    for k in range(1, 40):
        freq = k * f0
        gain = sum(1.0 / (1.0 + ((freq - fc) / bw) ** 2) for fc, bw in ((700, 130), (1220, 150), (2600, 250)))
        voice += gain * np.where(freq < SAMPLE_RATE / 2, 1.0, 0.0) * np.sin(k * phase) / k
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3.0 * t))
    envelope[(t > 0.62) & (t < 0.85)] = 0.0
    state = np.uint64(12345) + np.arange(n, dtype=np.uint64) * np.uint64(2654435761)
    noise = ((state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)) >> np.uint64(40)).astype(np.float64)
    noise = noise / float(1 << 24) - 0.5
    signal = voice * envelope + 0.02 * noise
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)


class OpenSmileBackbone(Backbone):
    """openSMILE functionals of each clip as a one-layer, one-frame "encoder" (no weights)."""

    def __init__(self, spec: BackboneSpec, extractor: SmileExtractor, *, max_tokens: int, max_seconds: float):
        super().__init__(spec, nn.Module(), extractor, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=extractor.num_features, num_layers=1)
        self.max_samples = int(round(max_seconds * SAMPLE_RATE))
        if self.max_samples < MIN_SAMPLES:
            raise BackboneError(f"max_seconds={max_seconds} is shorter than the {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms "
                                f"openSMILE needs for its functionals")

    @property
    def extractor(self) -> SmileExtractor:
        return self.processor

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        """``{"functionals": [B, D]}``: openSMILE on each clip (cropped to ``max_seconds``)."""
        rows = []
        clips = checked_clips(items, max_samples=self.max_samples, min_samples=MIN_SAMPLES, name=f"{self.spec.name} (openSMILE)")
        for i, clip in enumerate(clips):
            try:
                rows.append(self.extractor(clip))
            except AudioError as exc:
                raise AudioError(f"audio item {i}: {exc}") from None
        return {"functionals": torch.from_numpy(np.stack(rows))}

    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:
        x = inputs["functionals"].float().unsqueeze(1)  # [B, 1, D]: one "frame"
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return Encoded(hidden=x.unsqueeze(0) if all_layers else x, mask=mask)

    def freeze_feature_encoder(self) -> None:
        raise BackboneError(f"'{self.spec.name}' computes fixed openSMILE features: nothing in it trains; use mode frozen")

    def cache_identity(self) -> dict:
        return self.extractor.identity()

    def about(self) -> dict:
        e = self.extractor
        return {"extractor": f"openSMILE {e.feature_set} functionals, {e.num_features} per clip, computed by the opensmile "
                             f"package {e.version} (no learned weights; `pip install opensmile=={e.version}` to predict)"}

    def save(self, directory) -> None:
        """The sidecar only (there are no weights): spec, limits, feature set, version, reference features."""
        import json
        from pathlib import Path

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        e = self.extractor
        record = {
            "format": 1, "spec": self.spec.to_dict(), "max_tokens": self.max_tokens, "max_seconds": self.max_seconds,
            "opensmile": {"feature_set": e.feature_set, "feature_level": FEATURE_LEVEL, "version": e.version,
                          "sample_rate": SAMPLE_RATE, "num_features": e.num_features,
                          "reference": [float(v) for v in e(reference_signal())]},
        }
        (directory / EMOVOX_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, feature_set={self.extractor.feature_set!r}, features={self.hidden_size}"


def feature_set_of(spec: BackboneSpec) -> str:
    """``eGeMAPSv02`` from a spec whose hub id is ``opensmile:eGeMAPSv02``."""
    if not spec.hub_id.startswith(OPENSMILE_PREFIX):
        raise BackboneError(f"backbone '{spec.name}': an openSMILE spec names its feature set as "
                            f"'{OPENSMILE_PREFIX}SET', not '{spec.hub_id}'")
    return spec.hub_id[len(OPENSMILE_PREFIX):]


def saved_extractor(record: dict, where: str) -> SmileExtractor:
    """The installed extractor for a saved backbone's ``opensmile`` record, refused if its features differ."""
    if not isinstance(record, dict) or not {"feature_set", "version", "reference"} <= set(record):
        raise BackboneError(f"{where}: no complete 'opensmile' record (feature_set, version, reference); re-save it")
    trained = str(record["version"])
    pin = f"pip install opensmile=={trained}"
    if installed_version() is None:
        raise BackboneError(f"{where}: this recognizer reads openSMILE {record['feature_set']} features and needs the "
                            f"opensmile package it was trained with: {pin}")
    extractor = SmileExtractor.installed(str(record["feature_set"]))
    saved = np.asarray(record["reference"], dtype=np.float32)
    if saved.shape != (extractor.num_features,):
        raise BackboneError(f"{where}: trained on {saved.size} {extractor.feature_set} features, opensmile "
                            f"{extractor.version} computes {extractor.num_features}; {pin}")
    now = extractor(reference_signal())
    close = np.isclose(now, saved, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
    if not close.all():
        worst = int(np.argmax(np.abs(now - saved) / (np.abs(saved) + REFERENCE_ATOL)))
        raise BackboneError(
            f"{where}: trained on opensmile {trained}'s {extractor.feature_set} features, but the installed opensmile "
            f"{extractor.version} computes different ones ({int((~close).sum())} of {saved.size} differ on emovox's "
            f"reference signal, e.g. {extractor.names[worst]}: {saved[worst]:.6g} then, {now[worst]:.6g} now), so its "
            f"head would read features it was not trained on. Install the version it was trained with: {pin}"
        )
    if extractor.version != trained:
        warnings.warn(
            f"{where}: trained with opensmile {trained}, installed {extractor.version}; both give the same "
            f"{extractor.feature_set} features on emovox's reference signal, so predictions should match "
            f"(to be certain: {pin})",
            OpenSmileVersionWarning,
            stacklevel=3,
        )
    return extractor


def build_smile_backbone(spec: BackboneSpec, saved: dict, *, max_tokens: int, max_seconds: float) -> OpenSmileBackbone:
    """From a registry/``opensmile:SET`` spec (the installed package), or from a saved sidecar (checked)."""
    if "opensmile" in saved:
        extractor = saved_extractor(saved["opensmile"], where=spec.hub_id)
    else:
        extractor = SmileExtractor.installed(feature_set_of(spec))
    return OpenSmileBackbone(spec, extractor, max_tokens=max_tokens, max_seconds=max_seconds)

"""Everything a run loads once and every fold shares: the examples and what frozen parts compute.

The model kind says which fields to load (``fields``) and what to precompute (``prepare``: frozen
features, a frozen bottom), so a text model never decodes audio and frozen backbones run once per
run, not once per fold. Frozen backbones are loaded once (``BackboneStore``) and shared by the
folds' models; trainable ones are loaded fresh for each fold.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from emovox.audio import SAMPLE_RATE
from emovox.corpora.base import Corpus
from emovox.data.examples import Example, build_examples, common_context_format
from emovox.errors import ConfigError, EmovoxWarning
from emovox.models import registry
from emovox.models.branch import BackboneStore
from emovox.training.search import config_at, grid_points

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.models.base import ModelKind


class ExperimentData:
    """Examples of the whole corpus with their precomputed parts, and the backbones to build folds from."""

    def __init__(self, cfg: ExperimentConfig, corpus: Corpus, *, progress: bool = True):
        from emovox.cache import FeatureCache

        self.cfg = cfg
        self.corpus = corpus
        self.backbones = BackboneStore()
        self.points = [config_at(cfg, p) for p in grid_points(cfg.search)]
        prototypes = [self.build_model(p) for p in self.points]
        self.prototype = prototypes[0]
        fields = set().union(*(m.fields() for m in prototypes))
        examples, self.skipped = build_examples(
            corpus,
            [u.id for u in corpus],
            fields,
            max_seconds=max(m.max_seconds() for m in prototypes),
            on_error=cfg.on_bad_audio,
            context=common_context_format((m.context_format() for m in prototypes), where=cfg.name),
        )
        warn_uniform_durations(examples, corpus)
        cache = FeatureCache(cfg.cache_dir)
        with _threads(cfg.train.extract_threads or cfg.train.threads):
            for model in prototypes:  # grid points that precompute the same thing share it (Branch.slot)
                examples = model.prepare(examples, cache=cache, progress=progress)
        self.examples = {e.id: e for e in examples}

    def build_model(self, cfg: ExperimentConfig | None = None) -> ModelKind:
        """A fresh model of ``cfg``'s kind (default: the run's config): new head, seeded; frozen backbones shared."""
        cfg = cfg or self.cfg
        model = registry.build(cfg.model, self.corpus.labels, seed=cfg.train.seed, backbones=self.backbones)
        model.augment = cfg.train.augment
        from emovox.accel import resolve_extract_precision

        model.extract_precision = resolve_extract_precision(cfg.train.extract_precision)
        if cfg.train.augment.mixup and (not model.supports_mixup or getattr(cfg.model, "head", None) == "logistic"):
            raise ConfigError(
                f"train.augment.mixup: model kind '{model.kind}'"
                + (" with head: logistic (fitted in closed form)" if getattr(cfg.model, "head", None) == "logistic" else "")
                + " has no gradient-trained head over an embedding to mix; set train.augment.mixup: 0"
            )
        return model

    def select(self, ids: Sequence[str]) -> list[Example]:
        return [self.examples[i] for i in ids if i in self.examples]


#: Clip lengths varying less than this (seconds, max - min) count as "one length".
UNIFORM_SPREAD_S = 0.05


def warn_uniform_durations(examples: Sequence[Example], corpus: Corpus) -> None:
    """Warn when every clip lasts (nearly) the same: many public corpus copies are cut to one length,
    and a model trained only on that length can learn it and fail on any other."""
    _warn_if_uniform(np.array([len(e.audio) / SAMPLE_RATE for e in examples if e.audio is not None]), corpus)


def warn_uniform_durations_of(cfg: ExperimentConfig, corpus: Corpus) -> None:
    """The same warning from the files' headers, before any audio is decoded (``emovox cv --jobs``)."""
    import soundfile as sf

    limit = getattr(cfg.model, "max_seconds", None) or float("inf")  # a run crops clips to this length
    seconds = []
    for u in corpus:
        if u.audio is None:
            continue
        if u.end is not None:
            seconds.append(min(u.end - (u.start or 0.0), limit))
            continue
        try:
            seconds.append(min(sf.info(str(u.audio)).duration, limit))
        except Exception:  # unreadable: the run skips and lists it
            continue
    _warn_if_uniform(np.array(seconds), corpus)


def _warn_if_uniform(seconds: np.ndarray, corpus: Corpus) -> None:
    if len(seconds) < 10 or float(seconds.max() - seconds.min()) >= UNIFORM_SPREAD_S:
        return
    warnings.warn(
        f"{corpus.spec or corpus.name}: all {len(seconds)} clips last {seconds.mean():.2f} s (spread "
        f"{seconds.max() - seconds.min():.3f} s): a corpus cut to one length teaches a model that length. Keep "
        "train.augment.length on (random crops and silence padding while training) and test the recognizer on "
        "clips of other lengths before trusting it.",
        EmovoxWarning,
        stacklevel=3,
    )


@contextlib.contextmanager
def _threads(threads: int | None):
    """torch threads for the block (default: every core this process may use), then back to the run's setting."""
    import torch

    before = torch.get_num_threads()
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)

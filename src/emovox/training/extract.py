"""``emovox extract CFG --shard i/n``: fill the shared feature cache for a config's frozen parts, one shard at a time.

A run precomputes what its frozen branches compute (``ModelKind.prepare`` -> ``models.extraction.precompute``
-> ``emovox.cache.fill``) before its first fold. On a cluster that is the step to spread over many
machines first: ``n`` extraction jobs each fill a deterministic shard of the corpus
(``emovox.data.shards``) into one shared cache, after which every fold job only reads it. What is
extracted is exactly what the run will ask the cache for: the models of every search grid point,
and the baseline's features when ``baseline: true``, with the same fields and audio cropping.
Audio is loaded one chunk at a time, so a shard of a 100k-hour corpus never sits in memory whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emovox.data.examples import Skipped, build_examples, common_context_format
from emovox.data.shards import Shard
from emovox.models import registry
from emovox.models.branch import BackboneStore
from emovox.training.search import config_at, grid_points

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig
    from emovox.corpora.base import Corpus

#: Utterances loaded and extracted together (and the unit of sharding).
DEFAULT_CHUNK = 64


@dataclass
class ExtractSummary:
    shard: Shard
    utterances: int = 0
    chunks: int = 0
    computed: int = 0
    cached: int = 0
    caching_models: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def extraction_groups(cfg: ExperimentConfig) -> list[list]:
    """The configs whose models a run prepares together (one ``ExperimentData`` each): the recipe's
    grid points, then the baseline's."""
    groups = [[config_at(cfg, p) for p in grid_points(cfg.search)]]
    if cfg.baseline:
        from emovox.training.baseline import baseline_config

        bcfg = baseline_config(cfg)
        if bcfg is not None:
            groups.append([bcfg])
    return groups


def extract(
    cfg: ExperimentConfig, shard: Shard, *, chunk: int = DEFAULT_CHUNK, corpus: Corpus | None = None, progress: bool = True
) -> ExtractSummary:
    """Compute and cache this shard's frozen features for every model the run will build."""
    from tqdm.auto import tqdm

    from emovox.accel import set_threads
    from emovox.cache import FeatureCache

    set_threads(cfg.train.extract_threads or cfg.train.threads)  # extraction only: the extraction setting applies
    corpus = corpus if corpus is not None else cfg.open_corpus()
    ids = [u.id for u in corpus]
    ranges = shard.chunks(len(ids), chunk)
    summary = ExtractSummary(shard, utterances=sum(len(r) for r in ranges), chunks=len(ranges))
    cache = FeatureCache(cfg.cache_dir)
    store = BackboneStore()  # frozen backbones are loaded once for every chunk
    for configs in extraction_groups(cfg):
        models = [registry.build(c.model, corpus.labels, seed=c.train.seed, backbones=store) for c in configs]
        for m, c in zip(models, configs, strict=True):
            m.augment = c.train.augment  # the training copies a run will read (length augmentation) are cached too
            from emovox.accel import resolve_extract_precision

            m.extract_precision = resolve_extract_precision(c.train.extract_precision)
        fields = set().union(*(m.fields() for m in models))
        max_seconds = max(m.max_seconds() for m in models)
        context = common_context_format((m.context_format() for m in models), where=cfg.name)
        caching = [m for m in models if _caches(m)]
        summary.caching_models += len(caching)
        if not caching:
            continue
        with tqdm(total=summary.utterances, desc=f"extract {shard}", unit="utt", disable=not progress) as bar:
            for r in ranges:
                examples, skipped = build_examples(
                    corpus, ids[r.start : r.stop], fields, max_seconds=max_seconds, on_error=cfg.on_bad_audio, context=context
                )
                summary.skipped += [s for s in skipped if s.id not in {x.id for x in summary.skipped}]
                for m in caching:
                    examples = m.prepare(examples, cache=cache, progress=False)
                bar.update(len(r))
    summary.computed, summary.cached = cache.writes, cache.hits
    return summary


def _caches(model) -> bool:
    """Whether ``model`` precomputes anything (a frozen probe, a frozen bottom) rather than running live."""
    from emovox.models.branch import Branch

    return any(isinstance(m, Branch) and m.cache_mode is not None for m in model.modules())

"""The papers' way against emovox's way, on the same data in one process: speed, memory, accuracy.

The papers pad every clip to a fixed length (Whisper to 30 s by default, 10 s in the IEMOCAP
paper, which truncated Whisper's position table to 10 s) and recompute frozen models for every
experiment. emovox runs each length-grouped batch at its own real length, hides the padding with
masks, and caches frozen features on disk. Stages, all on EmoDB (``../shared/data/emodb``) and
Whisper-base (``../shared/models/whisper-base``):

1. frozen feature extraction (all 7 hidden layers, mean-pooled), in audio seconds per wall second:
   - ``30 s``: the stock transformers path, WhisperFeatureExtractor padding to 30 s (3000 mel
     frames) and ``WhisperEncoder.forward``, mean over all 1500 frames (on a subset: the rate of
     this path does not depend on which clips it sees, every clip costs 30 s);
   - ``10 s``: the IEMOCAP paper's path, clips padded to 10 s (1000 mel frames) and the encoder's
     position table truncated to 500, mean over all 500 frames, padding included;
   - ``emovox``: ``emovox.models.extraction.extract_pooled`` (length-grouped real-length batches through
     the backbone, masked pooling, float32 linears on oneDNN), cache off: pure computation;
   - two diagnostic rows that split the gain: the 10 s path with oneDNN linears, and emovox with
     torch's default (MKL) linears;
   plus the check that masked batched pooling equals pooling each clip alone (clips cut to random
   lengths, so batches are ragged), and optionally the bf16/int8 inference paths (``--precisions``);
2. one fine-tuning epoch of Whisper-base (weighted layer sum, mean pooling, dropout, linear; AdamW),
   10 s padding vs emovox (and emovox on MKL linears), the same clips and optimizer steps;
3. the whole leave-one-speaker-out frozen experiment (``recipes/emodb/emodb-whisper-base-frozen.yaml``
   through ``emovox.training.runner.run_cv``, feature cache in a temporary folder), cold and then
   again with the warm cache, and the same protocol trained on the 10 s-padded features (and on
   the bf16/int8 features of stage 1).

Memory is the peak resident set size of this process during each stage (Linux ``VmHWM``, reset
at the start of the stage through ``/proc/self/clear_refs``; elsewhere ``getrusage`` maxrss, the
process peak so far). It includes what the process already holds (the model, the audio).

    python benchmarks/speed.py            # full run
    python benchmarks/speed.py --quick    # smoke run on 48 clips

How long each takes, and what it measured where, is in ``benchmarks/README.md``. The EmoDB copy
holds the original clip lengths (1.2-9.0 s), so length grouping has real work to do; the pooling
check still cuts clips to random lengths, so that every batch is ragged.

Timings are only meaningful on an otherwise idle machine: the 1-minute load average at the start
and end of each stage is printed (this process itself adds up to ~2 with 2 threads). The two
headline ways (10 s and emovox) are timed interleaved, chunk by chunk, so a burst of load from
elsewhere slows both. This is a measurement, not a test; the last line is machine-readable::

    extraction_speedup_vs_10s=<x> realtime_factor=<x> loso_seconds=<s> ua_fast=<x> ua_padded=<x>
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emovox.audio import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", ROOT.parent / "shared"))
EMODB = SHARED / "data" / "emodb"
WHISPER_BASE = SHARED / "models" / "whisper-base"
RECIPE = ROOT / "recipes" / "emodb" / "emodb-whisper-base-frozen.yaml"


# --- measuring ------------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


@dataclass
class Measure:
    """Wall time, peak RSS and load average of one timed block (or the sum of several)."""

    seconds: float = 0.0
    peak_mb: float = 0.0
    start_mb: float = 0.0
    memory_method: str = ""
    load: tuple[float, float] = (0.0, 0.0)
    blocks: int = 0


@contextmanager
def measure(into: Measure | None = None) -> Iterator[Measure]:
    """Time a block; with ``into``, add its time to an earlier measure (peak: the maximum)."""
    m = into if into is not None else Measure()
    start_kb = _status_kb("VmRSS")
    per_stage = start_kb is not None and _reset_peak()
    if m.blocks == 0:
        m.start_mb = (start_kb or 0) / 1024
        m.memory_method = "VmHWM reset per stage" if per_stage else "getrusage maxrss (process peak so far)"
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds += time.perf_counter() - t0
        hwm = _status_kb("VmHWM") if per_stage else None
        peak_kb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m.peak_mb = max(m.peak_mb, peak_kb / 1024)
        m.load = (load0 if m.blocks == 0 else m.load[0], os.getloadavg()[0])
        m.blocks += 1


@dataclass
class Row:
    stage: str
    way: str
    clips: int
    audio_seconds: float
    m: Measure
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Audio seconds per wall second (the real-time factor)."""
        return self.audio_seconds / self.m.seconds if self.m.seconds > 0 else float("nan")


# --- data -----------------------------------------------------------------------------------------


def load_emodb(limit: int | None = None):
    """EmoDB as emovox reads it, and its examples (16 kHz arrays, cropped to the recipe's 10 s).

    ``limit``: keep at most one clip per (speaker, emotion) and then at most ``limit`` clips,
    spread over speakers, so that a small leave-one-speaker-out run still has every class.
    """
    from emovox.corpora import load_corpus
    from emovox.data.examples import build_examples

    corpus = load_corpus(f"emodb:{EMODB}")
    if limit is not None:
        seen: set[tuple[str, str]] = set()
        keep = []
        for u in sorted(corpus, key=lambda u: u.id):
            if (u.speaker, u.label) not in seen:
                seen.add((u.speaker, u.label))
                keep.append(u.id)
        corpus = corpus.subset(keep[:limit])
    examples, skipped = build_examples(corpus, [u.id for u in corpus], ["audio"], max_seconds=10.0)
    if skipped:
        raise RuntimeError(f"EmoDB clips could not be read: {skipped[:3]}")
    return corpus, examples


def spread_over_classes(examples, n: int) -> list:
    """``n`` examples taking each class in turn (corpus order within a class)."""
    by_class: dict[int, list] = {}
    for e in examples:
        by_class.setdefault(e.target, []).append(e)
    queues = [list(v) for _, v in sorted(by_class.items())]
    out: list = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def audio_seconds(clips: Sequence[np.ndarray]) -> float:
    return float(sum(len(c) for c in clips)) / SAMPLE_RATE


# --- the papers' way --------------------------------------------------------------------------------


def truncated_encoder(encoder: nn.Module, positions: int) -> nn.Module:
    """A copy of a transformers ``WhisperEncoder`` whose position table keeps its first
    ``positions`` rows, as the IEMOCAP paper did to run Whisper on 10 s inputs."""
    enc = copy.deepcopy(encoder)
    table = enc.embed_positions.weight[:positions].detach().clone()
    enc.embed_positions = nn.Embedding(positions, table.shape[1])
    enc.embed_positions.weight.data.copy_(table)
    enc.embed_positions.requires_grad_(False)
    enc.config = copy.deepcopy(enc.config)
    enc.config.max_source_positions = positions
    return enc


def padded_features(feature_extractor, clips: Sequence[np.ndarray], seconds: float | None) -> torch.Tensor:
    """Log-mel of clips padded (or cut) to a fixed length: ``seconds=None`` is the extractor's own
    default (30 s for Whisper); otherwise ``seconds`` worth of samples."""
    kwargs: dict = {"sampling_rate": SAMPLE_RATE, "return_tensors": "pt"}
    if seconds is not None:
        kwargs.update(padding="max_length", max_length=round(seconds * SAMPLE_RATE), truncation=True)
    return feature_extractor(list(clips), **kwargs)["input_features"]


def naive_pooled(encoder: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``[B, L, H]``: every hidden state (embeddings + each layer, the last after the final layer
    norm), averaged over all frames, padding included: the fixed-length papers' pooling."""
    out = encoder(features, output_hidden_states=True)
    return torch.stack(tuple(out.hidden_states), dim=1).mean(dim=2)


def extract_padded(encoder: nn.Module, feature_extractor, clips: Sequence[np.ndarray], seconds: float | None,
                   batch_size: int) -> torch.Tensor:
    """The papers' frozen extraction: fixed-length batches in corpus order, no masks."""
    encoder.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(clips), batch_size):
            out.append(naive_pooled(encoder, padded_features(feature_extractor, clips[i : i + batch_size], seconds)).float())
    return torch.cat(out)


class PaddedWhisperClassifier(nn.Module):
    """The IEMOCAP paper's fine-tuning model: 10 s inputs, truncated positions, weighted layer sum,
    mean over all 500 frames, dropout, linear (emovox's fine-tuned classifier without masks)."""

    def __init__(self, encoder: nn.Module, hidden: int, layers: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        from emovox.models.pooling import WeightedLayerSum

        self.encoder = encoder
        self.layer_weights = WeightedLayerSum(layers)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, inputs: dict) -> torch.Tensor:
        out = self.encoder(inputs["input_features"], output_hidden_states=True)
        hidden = self.layer_weights(torch.stack(tuple(out.hidden_states)))  # [B, T, H]
        return self.linear(self.dropout(hidden.mean(dim=1)))


# --- stage 1: extraction ----------------------------------------------------------------------------


def warm_up(fn) -> None:
    """One untimed call: oneDNN builds its kernels for new shapes on first use."""
    with torch.inference_mode():
        fn()


EXTRACTION_WAYS = ("30s", "10s", "10s+onednn", "emovox-mkl", "emovox")


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def bench_extraction(backbone, examples, *, ways: Sequence[str] = EXTRACTION_WAYS, batch_size: int = 16,
                     subset: int | None = None, chunk: int = 128) -> tuple[dict[str, Row], dict[str, torch.Tensor]]:
    """Extract frozen pooled features the given ways: ``{way: Row}`` timings and ``{way: [N, L, H]}``.

    ``10s`` and ``emovox`` (the headline ratio) run on every clip, interleaved chunk by chunk
    (``chunk`` clips, alternating which goes first), so that a burst of load from elsewhere slows
    both rather than one. ``30s`` and the two diagnostic ways (``10s+onednn``: the papers' 10 s
    path with emovox's oneDNN linears; ``emovox-mkl``: emovox without them) run on the first
    ``subset`` clips; every clip costs them the same, so the rate does not depend on which.
    """
    from emovox.accel import onednn_linears
    from emovox.models.extraction import extract_pooled

    clips = [e.audio for e in examples]
    sub = clips[: subset or len(clips)]
    rows: dict[str, Row] = {}
    feats: dict[str, torch.Tensor] = {}
    fe = backbone.feature_extractor
    encoder = backbone.model.encoder
    enc10 = truncated_encoder(encoder, 500)

    def run(way: str, part: slice) -> torch.Tensor:
        if way == "30s":
            return extract_padded(encoder, fe, clips[part], None, batch_size)
        if way == "10s":
            return extract_padded(enc10, fe, clips[part], 10.0, batch_size)
        if way == "10s+onednn":
            with onednn_linears(enc10):
                return extract_padded(enc10, fe, clips[part], 10.0, batch_size)
        if way == "emovox":
            return extract_pooled(backbone, examples[part], cache=None, batch_size=batch_size, progress=False)
        if way == "emovox-mkl":
            with _env("EMOVOX_ONEDNN", "0"):
                return extract_pooled(backbone, examples[part], cache=None, batch_size=batch_size, progress=False)
        raise ValueError(f"unknown extraction way {way!r}")

    for way in ways:
        warm_up(lambda w=way: run(w, slice(0, 1 if w in ("30s", "10s", "10s+onednn") else batch_size)))
    paired = [w for w in ("10s", "emovox") if w in ways]
    measures = {way: Measure() for way in ways}
    parts: dict[str, list[torch.Tensor]] = {way: [] for way in ways}
    for k, start in enumerate(range(0, len(clips), chunk)):
        for way in paired if k % 2 == 0 else paired[::-1]:
            with measure(measures[way]):
                parts[way].append(run(way, slice(start, start + chunk)))
    for way in ways:
        if way not in paired:
            with measure(measures[way]):
                parts[way].append(run(way, slice(0, len(sub))))
        feats[way] = torch.cat(parts[way])
    described = {
        "30s": ("30 s padding (stock transformers)", "3000 mel frames, 1500 positions, mean over all frames"),
        "10s": ("10 s padding (IEMOCAP paper)", "1000 mel frames, positions truncated to 500, mean over all frames"),
        "10s+onednn": ("10 s padding + oneDNN linears (diagnostic)", "what the GEMM library alone gives the papers' path"),
        "emovox-mkl": ("emovox, MKL linears (diagnostic)", "what real-length batching alone gives (EMOVOX_ONEDNN=0)"),
        "emovox": ("emovox (real length, grouped, masked)",
                   "extract_pooled as the runner calls it, cache off; float32, oneDNN linears"),
    }
    for way in ways:
        data = clips if way in paired else sub
        name, notes = described[way]
        if way in paired and len(paired) == 2:
            notes += f"; timed interleaved with the other headline way, {chunk} clips at a time"
        rows[way] = Row("extraction", name, len(data), audio_seconds(data), measures[way], notes)
    return rows, feats


def pooling_check(backbone, examples, *, batch_size: int = 16, seed: int = 0) -> dict:
    """Masked batched pooling vs each clip alone, on clips cut to random lengths (0.5 s to full),
    so the length-grouped batches are ragged: max abs difference and its scale."""
    from emovox.data.examples import Example
    from emovox.models.extraction import extract_pooled, pool_all_layers

    rng = np.random.default_rng(seed)
    cut = []
    for e in examples:
        n = int(rng.integers(SAMPLE_RATE // 2, len(e.audio) + 1))
        cut.append(Example(e.id, e.target, audio=e.audio[:n], length=n / SAMPLE_RATE))
    batched = extract_pooled(backbone, cut, cache=None, batch_size=batch_size, progress=False)
    with torch.inference_mode():
        alone = torch.cat([pool_all_layers(backbone, backbone.preprocess([e.audio]), "mean").float() for e in cut])
    diff = (batched - alone).abs()
    return {
        "clips": len(cut),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff.amax(dim=-1) / alone.abs().amax(dim=-1).clamp_min(1e-12)).max()),
        "feature_scale": float(alone.abs().max()),
        "lengths_s": (round(min(e.length for e in cut), 2), round(max(e.length for e in cut), 2)),
    }


def bench_precisions(backbone, examples, reference: torch.Tensor, *, batch_size: int = 16,
                     precisions: Sequence[str] = ("bf16", "int8")) -> tuple[list[Row], dict[str, torch.Tensor]]:
    """emovox's extraction through ``emovox.accel.optimize_for_inference`` at other precisions:
    timing rows and the features ``{precision: [N, L, H]}``."""
    from emovox.accel import AccelError, optimize_for_inference
    from emovox.models.extraction import extract_pooled

    clips = [e.audio for e in examples]
    rows = []
    feats: dict[str, torch.Tensor] = {}
    for precision in precisions:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao's deprecation notices
                model = optimize_for_inference(backbone, precision)
                warm_up(lambda m=model: extract_pooled(m, examples[:batch_size], cache=None, batch_size=batch_size,
                                                       progress=False))
                with measure() as m:
                    got = extract_pooled(model, examples, cache=None, batch_size=batch_size, progress=False)
        except AccelError as exc:
            print(f"# {precision}: skipped ({exc})", flush=True)
            continue
        ref = reference[: len(examples)]
        rel = float((got - ref).norm() / ref.norm())
        cos = float(nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1), dim=1).min())
        rows.append(Row("extraction", f"emovox {precision} (accel)", len(clips), audio_seconds(clips), m,
                        f"rel. L2 error vs fp32 {rel:.4f}, min cosine {cos:.5f}", {"rel_error": rel, "min_cosine": cos}))
        feats[precision] = got
        del model
    return rows, feats


# --- stage 2: one fine-tuning epoch -----------------------------------------------------------------


FINETUNE_WAYS = ("10s", "emovox-mkl", "emovox")


def bench_finetune_epoch(backbone, examples, num_classes: int, *, batch_size: int = 12, lr: float = 5e-5,
                         seed: int = 0, ways: Sequence[str] = FINETUNE_WAYS) -> dict[str, Row]:
    """One epoch of full fine-tuning, 10 s padding vs emovox, same clips and optimizer steps.

    All ways go through ``emovox.training.trainer.Trainer`` (AdamW, cross-entropy, no validation,
    no checkpoints). ``10s``: fixed 10 s log-mel into the truncated stock encoder, plain batches,
    torch's default (MKL) linears; ``emovox``: real-length length-grouped batches through the
    backbone, the trainer's oneDNN linears; ``emovox-mkl`` (diagnostic): emovox's batches on MKL.
    """
    from emovox.accel import onednn_linears
    from emovox.config import TrainConfig
    from emovox.models.classifier import ClassifierConfig, ClassifierModel
    from emovox.training.trainer import Trainer

    clips = [e.audio for e in examples]
    steps = math.ceil(len(examples) / batch_size)
    rows: dict[str, Row] = {}
    fe = backbone.feature_extractor

    def padded_collate(batch):
        return {"input_features": padded_features(fe, [e.audio for e in batch], 10.0)}

    for way in ways:
        torch.manual_seed(seed)
        model_backbone = copy.deepcopy(backbone).train()
        for p in model_backbone.parameters():
            p.requires_grad_(True)
        if way == "10s":
            model = PaddedWhisperClassifier(truncated_encoder(model_backbone.model.encoder, 500), backbone.hidden_size,
                                            backbone.num_layers, num_classes)
            collate, grouping, name = padded_collate, False, "10 s padding (IEMOCAP paper)"
        else:
            config = ClassifierConfig(backbone=backbone.spec.name, mode="finetune", layers="all", dropout=0.1)
            model = ClassifierModel(config, [str(i) for i in range(num_classes)], model_backbone)
            collate, grouping = (lambda batch, m=model: m.collate(batch)), True
            name = "emovox" if way == "emovox" else "emovox, MKL linears (diagnostic)"
        cfg = TrainConfig(lr=lr, batch_size=batch_size, max_epochs=1, patience=1, seed=seed, length_grouping=grouping,
                          class_weights="none")  # a small subset need not hold every class
        trainer = Trainer(model, collate, cfg, num_classes, progress=False)
        with contextlib.nullcontext() if way == "emovox" else _env("EMOVOX_ONEDNN", "0"):
            # untimed warm-up: one forward/backward on the path the way uses (no optimizer step,
            # weights unchanged), so kernel set-up is not billed to whichever way runs first
            model.train()
            with onednn_linears(model):
                model(collate(examples[:batch_size])).sum().backward()
            model.zero_grad(set_to_none=True)
            with measure() as m:
                fit = trainer.fit(examples, [])
        rows[way] = Row("fine-tune epoch", name, len(examples), audio_seconds(clips), m,
                        f"{steps} optimizer steps, batch {batch_size}, train loss {fit.history[0]['train_loss']:.3f}")
        del model, trainer, model_backbone
    return rows


# --- stage 3: the whole LOSO experiment -------------------------------------------------------------


def loso_run(cfg, corpus, out_dir: Path) -> tuple[dict, Measure]:
    from emovox.training.runner import run_cv

    with measure() as m:
        result = run_cv(cfg, out_dir, progress=False, corpus=corpus)
    return result, m


def loso_on_features(cfg, corpus, examples, features: torch.Tensor, out_dir: Path) -> tuple[float, Measure]:
    """The recipe's protocol and head trained on given features (the 10 s-padded ones): the
    runner's own ``train_fold`` on each fold, pooled UA over all test predictions."""
    from emovox.data.examples import Example
    from emovox.evaluation.metrics import compute_metrics
    from emovox.models.branch import BackboneStore
    from emovox.splits.protocols import make_folds
    from emovox.training.data import ExperimentData
    from emovox.training.folds import train_fold
    from emovox.training.search import config_at, grid_points

    class GivenFeatures(ExperimentData):
        def __init__(self):  # what ExperimentData holds, with the given features as the frozen branch's cache
            self.cfg, self.corpus, self.skipped, self.backbones = cfg, corpus, [], BackboneStore()
            self.points = [config_at(cfg, p) for p in grid_points(cfg.search)]
            self.prototype = self.build_model()
            slot = self.prototype.branch.slot
            self.examples = {
                e.id: Example(e.id, e.target, audio=e.audio, length=e.length, cached={slot: {"pooled": features[i]}})
                for i, e in enumerate(examples)
            }

    with measure() as m:
        data = GivenFeatures()
        folds = make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed)
        y_true: list[int] = []
        y_pred: list[int] = []
        for fold in folds:
            outcome = train_fold(cfg, data, fold, out_dir / f"fold_{fold.index}", progress=False)
            y_true += list(outcome.y_true)
            y_pred += [int(p) for p in outcome.probs.argmax(1)]
        ua = compute_metrics(y_true, y_pred, corpus.labels).ua
    return float(ua), m


def startup_seconds() -> float:
    """A fresh interpreter importing what ``emovox cv`` runs (the in-process LOSO timings start
    after the imports; a command-line run pays this once more)."""
    import subprocess

    t0 = time.perf_counter()
    modules = "emovox.cli, emovox.training.runner, emovox.backbones.whisper, emovox.backbones.audio, emovox.evaluation.reporting"
    subprocess.run([sys.executable, "-c", f"import {modules}, emovox.cache, emovox.models.classifier"], check=True, cwd=ROOT)
    return time.perf_counter() - t0


# --- report -----------------------------------------------------------------------------------------


def print_table(rows: list[Row], reference: dict[str, float]) -> None:
    print()
    print("| stage | way | clips | audio s | wall s | audio s / wall s | vs 10 s | vs 30 s | peak RSS MB | load 1 min | notes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        ref10, ref30 = reference.get(f"{r.stage}:10s"), reference.get(f"{r.stage}:30s")
        vs10 = f"{r.rate / ref10:.1f}x" if ref10 else ""
        vs30 = f"{r.rate / ref30:.1f}x" if ref30 else ""
        print(f"| {r.stage} | {r.way} | {r.clips} | {r.audio_seconds:.0f} | {r.m.seconds:.2f} | {r.rate:.1f} | {vs10} | {vs30} "
              f"| {r.m.peak_mb:.0f} | {r.m.load[0]:.2f}->{r.m.load[1]:.2f} | {r.notes} |")
    print()


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: a few dozen clips, 4 for the 30 s path")
    ap.add_argument("--clips", type=int, default=None, help="EmoDB clips for extraction and LOSO (default all 535)")
    ap.add_argument("--subset", type=int, default=64,
                    help="clips for the (slow) stock 30 s path and the two diagnostic rows")
    ap.add_argument("--finetune-clips", type=int, default=96, help="clips for the fine-tuning epoch")
    ap.add_argument("--check-clips", type=int, default=64, help="clips for the masked-pooling check")
    ap.add_argument("--batch-size", type=int, default=16, help="extraction batch size (all ways)")
    ap.add_argument("--precisions", default="bf16,int8", help="extra inference paths to time ('' for none)")
    ap.add_argument("--skip", default="", help="comma list of stages to skip: finetune,loso")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all available cores)")
    args = ap.parse_args(argv)
    if args.quick:
        args.clips = args.clips or 48
        args.subset, args.finetune_clips, args.check_clips = 4, 7, 6
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for path in (EMODB / "wav", WHISPER_BASE / "config.json", RECIPE):
        if not path.exists():
            sys.exit(f"missing {path}: this benchmark needs ../shared (EmoDB and Whisper-base); set EMOVOX_SHARED")
    os.chdir(ROOT)  # the recipe's ../shared paths are relative to the project root

    from emovox.accel import set_threads
    from emovox.backbones.loader import load_backbone
    from emovox.config import load_config

    set_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()}", flush=True)
    with measure() as m_load:
        corpus, examples = load_emodb(args.clips)
        backbone = load_backbone(str(WHISPER_BASE))
    print(f"# loaded {len(examples)} EmoDB clips ({audio_seconds([e.audio for e in examples]):.0f} s of audio) and "
          f"Whisper-base in {m_load.seconds:.1f} s", flush=True)

    rows: list[Row] = []
    reference: dict[str, float] = {}
    ext_rows, feats = bench_extraction(backbone, examples, batch_size=args.batch_size, subset=args.subset)
    rows += list(ext_rows.values())
    reference["extraction:30s"], reference["extraction:10s"] = ext_rows["30s"].rate, ext_rows["10s"].rate
    emovox_row = ext_rows["emovox"]
    print(f"# extraction done: emovox {emovox_row.rate:.1f}x real time", flush=True)
    check = pooling_check(backbone, examples[: args.check_clips], batch_size=args.batch_size)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    precision_feats: dict[str, torch.Tensor] = {}
    if precisions:
        p_rows, precision_feats = bench_precisions(backbone, examples, feats["emovox"], batch_size=args.batch_size,
                                                   precisions=precisions)
        rows += p_rows

    if "finetune" not in skip:
        ft_examples = spread_over_classes(examples, args.finetune_clips)
        ft_batch = 12 if not args.quick else 3
        ft_rows = bench_finetune_epoch(backbone, ft_examples, len(corpus.labels), batch_size=ft_batch)
        rows += list(ft_rows.values())
        reference["fine-tune epoch:10s"] = ft_rows["10s"].rate

    loso: dict = {}
    if "loso" not in skip:
        cfg = load_config(RECIPE)
        work = Path(tempfile.mkdtemp(prefix="emovox-speed-"))
        try:
            cfg = cfg.model_copy(update={"cache_dir": work / "cache"})
            cold, m_cold = loso_run(cfg, corpus, work / "cold")
            warm, m_warm = loso_run(cfg, corpus, work / "warm")
            ua_padded, m_pad = loso_on_features(cfg, corpus, examples, feats["10s"], work / "padded")
            ua_other = {p: loso_on_features(cfg, corpus, examples, f, work / p) for p, f in precision_feats.items()}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        audio = audio_seconds([e.audio for e in examples])
        start = startup_seconds()
        for name, res, m in (("cold cache (end to end)", cold, m_cold), ("warm cache (rerun)", warm, m_warm)):
            rows.append(Row("LOSO frozen", f"emovox, {name}", len(examples), audio, m,
                            f"pooled UA {res['pooled']['ua']:.4f}; backbone + audio + features {res['feature_seconds']:.1f} s, "
                            f"{len(res['fold_seconds'])} folds {sum(res['fold_seconds']):.1f} s; a fresh process adds "
                            f"{start:.1f} s of imports"))
        rows.append(Row("LOSO frozen", "heads on 10 s-padded features", len(examples), audio, m_pad,
                        f"pooled UA {ua_padded:.4f} (features from stage 1, not timed here)"))
        for p, (ua, m) in ua_other.items():
            rows.append(Row("LOSO frozen", f"heads on emovox {p} features", len(examples), audio, m,
                            f"pooled UA {ua:.4f} (features from stage 1, not timed here)"))
        loso = {"seconds": m_cold.seconds, "warm": m_warm.seconds, "ua_fast": cold["pooled"]["ua"], "ua_padded": ua_padded}

    print_table(rows, reference)
    print(f"Memory: {rows[0].m.memory_method}; includes the loaded model and audio "
          f"(RSS before stage 1: {rows[0].m.start_mb:.0f} MB).")
    print(f"Masked pooling vs each clip alone ({check['clips']} clips cut to {check['lengths_s'][0]}-{check['lengths_s'][1]} s, "
          f"ragged batches of {args.batch_size}): max abs diff {check['max_abs_diff']:.2e} "
          f"(max relative {check['max_rel_diff']:.2e}; features reach {check['feature_scale']:.1f}).")
    if "10s" in feats and "emovox" in feats:
        d = (feats["10s"] - feats["emovox"]).norm() / feats["emovox"].norm()
        print(f"10 s-padded naive features differ from emovox's by {float(d):.3f} (relative L2): the padding frames "
              "enter the mean, which is why the papers' numbers depend on the padding length.")
    line = (f"extraction_speedup_vs_10s={emovox_row.rate / reference['extraction:10s']:.2f} "
            f"realtime_factor={emovox_row.rate:.1f} "
            f"loso_seconds={loso.get('seconds', float('nan')):.1f} "
            f"ua_fast={loso.get('ua_fast', float('nan')):.4f} ua_padded={loso.get('ua_padded', float('nan')):.4f}")
    return line


if __name__ == "__main__":
    result = main()
    # The promise of the module docstring: the machine-readable line is the last line, whatever the stages
    # printed or warned before it (notes go to stdout as "# ..." lines, warnings to stderr): both streams are
    # flushed first, and nothing is printed after it.
    sys.stderr.flush()
    sys.stdout.flush()
    print(result, flush=True)

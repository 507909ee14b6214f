"""How a fold's closed-form head fit grows with its training rows.

The logistic head chooses its candidates (C x layer sets x normalisations) by cross-validation
over speaker groups inside the training part, then fits the chosen one. With fewer rows than
features (EmoDB: ~970 rows, 3,584 features) the fits run in the span of the rows, whose cost grows
with the square of the rows; past that point they run on the features themselves, whose cost
grows linearly with the rows (``emovox.models.logistic.inner_oof``). This script takes one fold of
a recipe, gives its head growing random subsets of the fold's training speakers, and times
``fit_statistics`` + ``fit_direct`` (everything the fold does between its cached features and its
test predictions) in CPU seconds of this process: CPU time, not wall time, because the machine
may be shared; one BLAS thread, as in a fold.

    python benchmarks/head_fit_scaling.py recipes/emodb/emodb-whisper-base-frozen.yaml \\
        --set corpus=ravdess:runs/data/ravdess --set protocol=speaker-groups:6 --fractions 0.25 0.5 0.75 1

Prints one row per subset (speakers, rows the fit sees with augmented views, features, the space
the inner fits used, CPU seconds, CPU seconds per 1,000 rows) and the growth exponent between
consecutive sizes (1 = linear); ``--plot FILE`` draws CPU seconds against rows. The last line is
machine-readable: ``rows=<r1,r2,...> cpu_seconds=<s1,s2,...>``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fold", type=int, default=1, help="the fold whose training part is subsampled (default 1)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from emovox.config import load_config
    from emovox.splits.protocols import make_folds
    from emovox.training.data import ExperimentData

    torch.set_num_threads(1)
    cfg = load_config(args.recipe, args.overrides).model_copy(update={"baseline": False})
    corpus = cfg.open_corpus()
    fold = next(f for f in make_folds(corpus, cfg.protocol, cfg.validation, seed=cfg.train.seed) if f.index == args.fold)
    print(f"{cfg.name}: fold {fold.index} ({fold.name}), load average {os.getloadavg()[0]:.1f}", flush=True)
    data = ExperimentData(cfg, corpus, progress=True)
    train = data.select(fold.train)
    valid = data.select(fold.valid)
    speakers = sorted({e.speaker for e in train})
    rng = random.Random(args.seed)
    order = speakers[:]
    rng.shuffle(order)
    results = []
    for fraction in sorted(args.fractions):
        keep = set(order[: max(2, round(fraction * len(order)))])
        part = [e for e in train if e.speaker in keep]
        model = data.build_model()
        model.use_fold(fold, corpus)
        t0, c0 = time.time(), time.process_time()
        model.fit_statistics(part)
        choices = model.fit_direct(part, valid)
        cpu, wall = time.process_time() - c0, time.time() - t0
        views = sum(len((e.cached.get(model.branch.slot) or {}).get("variants") or []) for e in part) if hasattr(model, "branch") else 0
        rows = len(part) + views
        width = model.reducer.out_width if hasattr(model, "reducer") else 0
        sets = getattr(model.config, "layer_sets", None) if hasattr(model, "branch") else None
        if sets:  # the inner fits run on each candidate's columns: the widest candidate decides the space
            width = max(len(s) for s in sets) * model.branch.width
        space = "rows" if rows < width else "features"
        results.append((len(keep), rows, width, space, cpu, wall, choices))
        print(
            f"speakers {len(keep):3d}  rows {rows:6d}  features {width:5d}  inner space {space:8s}  cpu {cpu:8.1f} s  "
            f"wall {wall:8.1f} s  cpu per 1k rows {1000 * cpu / rows:6.1f} s  chose {_chosen(choices)}",
            flush=True,
        )
    for (_, r0, *_, c0_, _, _), (_, r1, *_, c1_, _, _) in zip(results, results[1:], strict=False):
        if r1 > r0 and c1_ > 0 and c0_ > 0:
            print(f"growth {r0} -> {r1} rows: exponent {math.log(c1_ / c0_) / math.log(r1 / r0):.2f} (1 = linear)")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r[1] for r in results], [r[4] for r in results], "o-")
        if results:
            ax.axvline(results[0][2], color="grey", ls=":", label="rows = features")
        ax.set_xlabel("training rows the head sees (with augmented views)")
        ax.set_ylabel("head fit, CPU seconds")
        ax.set_title(cfg.name, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    print("rows=" + ",".join(str(r[1]) for r in results) + " cpu_seconds=" + ",".join(f"{r[4]:.1f}" for r in results))


def _chosen(choices: dict | None) -> str:
    if not choices:
        return "-"
    keys = ("normalize", "layers", "C")
    return " ".join(f"{k}={choices[k]}" for k in keys if k in choices)


if __name__ == "__main__":
    sys.exit(main())

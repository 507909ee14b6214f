"""A seeded, stratified subset of MELD in MELD's own file layout, for runs too slow for the full splits.

Writes ``train_sent_emo.csv``, ``dev_sent_emo.csv`` and ``test_sent_emo.csv`` (the release's
columns and rows, unchanged, a subset of the rows) to ``--out``, so that ``meld:OUT`` reads it
with the ordinary reader and the ``official`` protocol. Each split is sampled separately and
stratified by emotion: every class gets its share of ``--train``/``--dev``/``--test`` utterances
by largest remainder, at least one; ``0`` (the default for test) keeps the whole split. Rows
keep the release's order. The sample is a pure function of the release files, the sizes and
``--seed`` (numpy ``default_rng(seed)``, one permutation per class in sorted class order).

    python benchmarks/meld_subset.py --train 1000 --dev 350 --out runs/data/meld-train1000-dev350

The output is derived data: keep it out of git (``runs/`` is ignored).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))
FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Proportional allocation of ``n`` over classes by largest remainder, at least one each."""
    total = sum(counts.values())
    if n <= 0 or n >= total:
        return dict(counts)
    exact = {c: n * k / total for c, k in counts.items()}
    alloc = {c: min(counts[c], max(1, int(v))) for c, v in exact.items()}
    order = sorted(counts, key=lambda c: (-(exact[c] - int(exact[c])), c))
    i = 0
    while sum(alloc.values()) < n:
        c = order[i % len(order)]
        if alloc[c] < counts[c]:
            alloc[c] += 1
        i += 1
    while sum(alloc.values()) > n:  # the at-least-one rule overshot: take from the largest
        c = max(alloc, key=lambda k: (alloc[k], k))
        alloc[c] -= 1
    return alloc


def sample(rows: list[dict], n: int, seed: int) -> list[int]:
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_class.setdefault(r["Emotion"].strip().lower(), []).append(i)
    alloc = allocate({c: len(v) for c, v in by_class.items()}, n)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in sorted(by_class):
        idx = by_class[c]
        keep += [idx[j] for j in rng.permutation(len(idx))[: alloc[c]]]
    return sorted(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meld", type=Path, default=SHARED / "data" / "meld")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--dev", type=int, default=0)
    parser.add_argument("--test", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, name in FILES.items():
        with open(args.meld / name, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)
        keep = sample(rows, getattr(args, split), args.seed)
        with open(args.out / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows[i] for i in keep)
        counts = Counter(rows[i]["Emotion"].strip().lower() for i in keep)
        print(f"{split}: {len(keep)} of {len(rows)}  " + ", ".join(f"{c} {counts[c]}" for c in sorted(counts)))


if __name__ == "__main__":
    main()

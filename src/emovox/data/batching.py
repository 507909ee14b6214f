"""Length-grouped batching.

Real corpora mix 1 s and 15 s clips; padding every batch to the longest clip of a random batch
(or, as the papers did, to a fixed 10 s / 30 s) spends most compute on zeros. Grouping clips of
similar length keeps padding small while still shuffling which batches come when.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def length_grouped_batches(
    lengths: Sequence[float],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    megabatch_factor: int = 50,
) -> list[list[int]]:
    """Indices in batches of similar length.

    Training (``shuffle=True``): shuffle, cut into mega-batches of ``megabatch_factor`` batches,
    sort each by length, chunk, then shuffle the batch order (the recipe of transformers'
    ``LengthGroupedSampler``), so every epoch sees different neighbours. Evaluation
    (``shuffle=False``): plain sort by length, longest first, so peak memory shows up at once.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    mega = batch_size * megabatch_factor
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def plain_batches(n: int, batch_size: int, *, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Random (or in-order) batches, for when length grouping is switched off."""
    order = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]

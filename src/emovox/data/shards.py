"""Deterministic shards of an ordered list of inputs: ``--shard i/n`` (1-based, as SLURM array ids and folds).

The unit is a *chunk* of consecutive inputs, and chunk ``j`` (0-based) belongs to shard
``j mod n + 1``. Chunks, not single inputs, because a model's output for an input depends (by
float rounding, through padding) on which inputs share its batch: each chunk is batched alone, so
every input is computed in the same batch whether it runs in shard 2 of 8 or in one unsharded
run, and the union of the shards' outputs equals the unsharded output exactly. Shards are
disjoint by construction and cover every input; with more shards than chunks the extra shards
are empty and succeed with nothing to do. This is the split ESPnet and NeMo use for decoding
(``split_scp`` / manifest shards), merged back by utterance id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from emovox.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"2/8"`` -> ``Shard(2, 8)``; None -> the whole (``1/1``)."""
        if text is None:
            return cls(1, 1)
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ConfigError(f"--shard {text!r}: expected i/n with 1 <= i <= n, e.g. --shard 2/8 (shards are numbered from 1)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def chunks(self, total: int, chunk: int) -> list[range]:
        """Index ranges of the chunks of ``total`` inputs that belong to this shard, in order."""
        if chunk < 1:
            raise ConfigError(f"chunk size {chunk}: must be at least 1")
        starts = range(0, total, chunk)
        return [range(s, min(s + chunk, total)) for j, s in enumerate(starts) if j % self.count == self.index - 1]

    def select(self, items: Sequence[T], chunk: int) -> list[tuple[int, T]]:
        """``(position in items, item)`` for every item of this shard, in order."""
        return [(i, items[i]) for r in self.chunks(len(items), chunk) for i in r]

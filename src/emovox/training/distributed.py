"""Several processes training one model: data-parallel (DDP) through Accelerate, under ``torchrun`` or
``accelerate launch``; nothing changes for one process.

The trainer asks this module four things, and in a single process each answer is the identity, so
the one-process path (the default, and every test but one) runs exactly the code and numbers it did
before this module existed, without even importing Accelerate:

- ``share(batches)``: this rank's training batches. Rank ``r`` of ``W`` takes batches ``r, r+W,
  r+2W, ...`` of the seeded, length-grouped epoch order every rank computes alike; a rank left
  without a batch at the last step (an odd batch count) runs a zero-weighted copy of one of its
  own, because DDP's all-reduce needs every rank in every step. DDP averages the ranks' gradients,
  so ``W`` processes with ``grad_accum: g`` take the same steps as one process with
  ``grad_accum: W*g`` (tested to give the same predictions and metrics).
- ``gather_rows``: predictions made on a share of the batches (length-grouped batches differ in
  size), gathered from every rank by utterance id into the caller's order. Accelerate's own
  even-batch padding repeats utterances to make shards equal; keyed by id, a repeat can never be
  counted twice. Every rank gets the full result, so early stopping decides alike everywhere.
- ``is_main()`` / ``barrier()``: checkpoints, predictions and results are written by the main
  process only; the others wait where they would read them.
- ``weights_digests``: the sha256 of each rank's trained weights, which must all be equal (DDP keeps
  them in step; a difference is an error, and ``done.json`` records them).

Launch (CPU: gloo; GPU: NCCL; FSDP or DeepSpeed come from ``accelerate config``)::

    torchrun --nproc_per_node 2 -m emovox cv RECIPE.yaml --fold 1
    accelerate launch --multi_gpu --num_processes 2 -m emovox cv RECIPE.yaml --fold 1

On a machine without GPUs ``accelerate launch --cpu --num_processes 2`` starts ONE process;
``--multi_gpu`` (torchrun underneath) starts two gloo processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def launched_world_size() -> int:
    """Processes the launcher started (``WORLD_SIZE`` set by torchrun / accelerate launch), 1 otherwise."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


class Processes:
    """This process's place among the ranks; ``accelerator`` is None in a single process."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator

    @property
    def world(self) -> int:
        return 1 if self.accelerator is None else int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return 0 if self.accelerator is None else int(self.accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        return None if self.accelerator is None else torch.device(self.accelerator.device)


_current: Processes | None = None


def processes() -> Processes:
    """The process group, joined on first use when a launcher started several processes."""
    global _current
    if _current is None:
        if launched_world_size() > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            # find_unused_parameters: a context branch's "no input" vector, or a head layer that a batch
            # does not reach, must not stall DDP's reduction.
            accelerator = Accelerator(
                cpu=not torch.cuda.is_available(),
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            )
            _current = Processes(accelerator)
            if not accelerator.is_main_process:
                _quiet()
        else:
            _current = Processes(None)
    return _current


def _quiet() -> None:
    """Logs come from the main process: the others keep their errors (which stop the launch) and drop
    warnings and library chatter, which would only repeat the main process's once per rank."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - a dependency
        pass


def is_main() -> bool:
    """True in the process that writes files and logs (always, in a single process)."""
    return world() == 1 or processes().is_main


def world() -> int:
    return processes().world if launched_world_size() > 1 else 1


def barrier() -> None:
    if world() > 1:
        processes().accelerator.wait_for_everyone()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (e.g. fills the feature cache), the others then read its result."""
    if world() == 1:
        yield
        return
    with processes().accelerator.main_process_first():
        yield


def end() -> None:
    """Leave the process group cleanly (Accelerate's ``end_training``); nothing in a single process.

    Call it last: afterwards this process no longer knows its rank (ask ``is_main()`` before)."""
    global _current
    if _current is not None and _current.accelerator is not None:
        _current.accelerator.end_training()
        _current = None


def default_device() -> str | torch.device:
    if world() > 1:
        return processes().device
    return "cuda" if torch.cuda.is_available() else "cpu"


# --- training --------------------------------------------------------------------------------------


class _LossModule(nn.Module):
    """DDP synchronises gradients of what runs inside its ``forward``; a model kind's loss is a method,
    so this module makes ``loss(inputs, targets, weight)`` the forward of the wrapped model."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, inputs: dict, targets: torch.Tensor, weight: torch.Tensor | None):
        return self._loss(inputs, targets, weight)


def training_loss(model: nn.Module, loss: Callable) -> Callable:
    """``loss`` itself in one process; across processes the same call through Accelerate's DDP wrapper."""
    if world() == 1:
        return loss
    return processes().accelerator.prepare_model(_LossModule(model, loss))


def share(batches: Sequence[list[int]]) -> list[tuple[list[int], bool]]:
    """This rank's ``(batch, counts)`` steps; ``counts`` False marks a zero-weighted stand-in batch."""
    n = world()
    if n == 1:
        return [(b, True) for b in batches]
    rank = processes().rank
    mine = [(list(b), True) for b in batches[rank::n]]
    steps = -(-len(batches) // n)
    filler = list(batches[rank % len(batches)]) if batches else []
    return mine + [(filler, False)] * (steps - len(mine))


def predict_share(batches: Sequence[list[int]]) -> list[list[int]]:
    """The batches this rank predicts (no collective runs per batch, so shares may differ in length)."""
    n = world()
    return list(batches) if n == 1 else list(batches[processes().rank :: n])


def gather_rows(out: np.ndarray, done: Sequence[Sequence[int]], ids: Sequence[str]) -> np.ndarray:
    """``out`` with every rank's rows filled in, matched by utterance id (a repeated id counts once)."""
    if world() == 1:
        return out
    from accelerate.utils import gather_object

    mine = [(ids[i], out[i]) for b in done for i in b]
    by_id: dict[str, np.ndarray] = {}
    for uid, row in gather_object(mine):
        by_id.setdefault(uid, row)
    missing = [uid for uid in ids if uid not in by_id]
    if missing:
        raise RuntimeError(f"rows of {len(missing)} utterance(s) were predicted by no process, e.g. {missing[0]}")
    return np.stack([by_id[uid] for uid in ids]).astype(out.dtype, copy=False) if len(ids) else out


def sum_across(values: Sequence[float]) -> list[float]:
    """Element-wise sums of small per-rank tallies (e.g. the epoch's loss total and count)."""
    if world() == 1:
        return list(values)
    from accelerate.utils import gather_object

    rows = gather_object([list(values)])
    return [float(sum(r[i] for r in rows)) for i in range(len(values))]


def weights_digests(tensors: dict[str, torch.Tensor]) -> list[str]:
    """sha256 of the trained weights on every rank (one entry per rank); raises if the ranks diverged."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    if world() == 1:
        return [digest]
    from accelerate.utils import gather_object

    digests = gather_object([digest])
    if len(set(digests)) != 1:
        raise RuntimeError(f"the processes' trained weights differ ({digests}); DDP lost synchronisation")
    return list(digests)


def describe() -> dict[str, Any] | None:
    """What results record about the processes (None for one process, so single-process records are unchanged)."""
    if world() == 1:
        return None
    acc = processes().accelerator
    return {"world_size": world(), "backend": str(getattr(acc.state, "backend", None)), "type": str(acc.distributed_type)}

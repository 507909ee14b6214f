"""A fit's resume state, owned by one class (``Checkpointer``, as SpeechBrain's ``Checkpointer`` owns its), in
atomic, pickle-free files.

Resuming restores model, optimizer, scheduler, RNG and early-stopping state at the last checkpoint;
the trainer's batch order is a pure function of (seed, epoch), so an interrupted run ends with the same
numbers as one that was not. A step checkpoint (mid-epoch) also records how many of the epoch's batches were done and the
epoch's running loss, and the resumed run skips those batches of the same order. (Augmentation
must therefore draw from the checkpointed RNGs, or be a function of epoch and example, never
from a generator advanced batch by batch since ``set_epoch``.)

Checkpoint layout in ``run_dir``: ``last_model.TAG.safetensors`` and
``last_optimizer.TAG.safetensors`` (TAG ``eNNN`` at the end of epoch NNN, ``eNNN.sSSSSSSS`` at
global optimizer step S inside epoch NNN; the optimizer file also holds torch's RNG) and
``last_state.json`` (epoch, step, history, early stopping, scheduler, Python/numpy RNG, and the
names of those two files), written in that order, each atomically. The JSON is the commit point:
a process killed after the tensors of a checkpoint were written but before the JSON still resumes
from the previous checkpoint with that checkpoint's tensors (the files of one checkpoint are never
overwritten by the next), and older files are deleted only after the JSON naming the newer ones
is in place. With ``keep_checkpoints: K > 1`` the K-1 checkpoints before the newest are kept too,
each with its state as ``last_state.TAG.json``, and resuming falls back to the newest readable one.

Everything is safetensors (tensors) plus JSON (numbers, RNG state of Python's ``random``), so a
checkpoint from a stranger cannot run code when loaded, and a crash mid-write leaves the
previous checkpoint intact (write to a temporary file, fsync it, then ``os.replace``; the rename
is atomic, so a reader sees the old file or the new one, never half of one). A process killed
mid-write leaves at most a hidden ``.NAME.*.tmp`` file, which ``remove_stale_temporaries``
clears when the run resumes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from emovox.atomic import atomic_save_tensors, atomic_write_json
from emovox.errors import EmovoxError
from emovox.models.fold_model import frozen_names, learnt_state
from emovox.training import distributed

#: The file whose presence means "this run can resume"; written last at every checkpoint.
STATE_FILE = "last_state.json"
#: Per-checkpoint files that a state names (``*`` is the checkpoint's tag), and older kept states.
RESUME_GLOBS = ("last_model.e*.safetensors", "last_optimizer.e*.safetensors", "last_state.e*.json")
#: The weights of the epoch chosen on validation.
BEST_FILE = "best_model.safetensors"


class Checkpointer:
    """The resume state of one fit in ``run_dir`` (None: nothing to resume; the best weights are kept in memory).

    ``save`` commits a resume checkpoint, ``resume`` restores the newest readable one, ``save_best`` /
    ``load_best`` keep the weights of the epoch chosen on validation; ``keep`` checkpoints are kept (the newest
    and ``keep - 1`` before it, each with its state as ``last_state.TAG.json``).
    """

    def __init__(self, run_dir: Path | None, *, keep: int = 1):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.keep = keep
        self._best_in_memory: dict[str, torch.Tensor] | None = None

    def save(self, model: nn.Module, optimizer, scheduler, state: dict) -> None:
        """Commit a resume checkpoint: ``state`` has ``epoch`` (the last finished one), ``global_step``
        and, mid-epoch, ``in_epoch`` (the unfinished epoch's progress)."""
        assert self.run_dir is not None
        part = state.get("in_epoch")
        tag = f"e{part['epoch']:03d}.s{state['global_step']:07d}" if part else f"e{int(state['epoch']):03d}"
        model_file, optimizer_file = f"last_model.{tag}.safetensors", f"last_optimizer.{tag}.safetensors"
        atomic_save_tensors(self.run_dir / model_file, learnt_state(model))
        opt_tensors, opt_plain = optimizer_to_flat(optimizer.state_dict())
        opt_tensors["__torch_rng__"] = torch.get_rng_state()
        atomic_save_tensors(self.run_dir / optimizer_file, opt_tensors)
        np_state = np.random.get_state()
        state = dict(
            state,
            tag=tag,
            model_file=model_file,
            optimizer_file=optimizer_file,
            optimizer=opt_plain,
            scheduler=scheduler.state_dict(),
            python_rng=list(_jsonable(random.getstate())),
            numpy_rng=[np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        )
        keep_older = self.keep - 1
        if keep_older:
            self._archive_current_state()
        # the JSON goes last: its presence means the two tensor files it names are complete
        atomic_write_json(self.run_dir / STATE_FILE, state)
        keep = {model_file, optimizer_file, STATE_FILE}
        for name, old in self._older_states()[:keep_older]:
            keep |= {name, old["model_file"], old["optimizer_file"]}
        clear_resume_state(self.run_dir, keep=keep)

    def _archive_current_state(self) -> None:
        """Before a new checkpoint is committed, keep the current one's state as ``last_state.TAG.json``."""
        assert self.run_dir is not None
        try:
            data = json.loads((self.run_dir / STATE_FILE).read_text())
            archive = self.run_dir / f"last_state.{_tag_of(data)}.json"
        except (OSError, ValueError, KeyError):
            return  # none yet, or unreadable: nothing worth keeping
        if not archive.is_file():
            atomic_write_json(archive, data)

    def _older_states(self) -> list[tuple[str, dict]]:
        """The kept states older than ``last_state.json`` (``last_state.TAG.json``), newest first."""
        assert self.run_dir is not None
        states = []
        for p in self.run_dir.glob("last_state.e*.json"):
            try:
                data = json.loads(p.read_text())
                states.append((_position(data), p.name, data))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return [(name, data) for _, name, data in sorted(states, key=lambda x: x[0], reverse=True)]

    def resume(self, model: nn.Module, optimizer, scheduler) -> dict | None:
        """Restore the newest readable checkpoint into ``model``, ``optimizer``, ``scheduler`` and the RNGs; its state
        (None: there is none). An unreadable newest one falls back to an older kept one, with a warning."""
        if self.run_dir is None:
            return None
        if distributed.is_main():
            remove_stale_temporaries(self.run_dir)
        current = self.run_dir / STATE_FILE
        candidates = [current] if current.is_file() else []
        candidates += [self.run_dir / name for name, _ in self._older_states()]
        if not candidates:
            return None
        failures = []
        for path in candidates:
            reading = path
            try:
                state = json.loads(path.read_text())
                reading = self.run_dir / state["model_file"]
                model_tensors = load_file(str(reading))
                reading = self.run_dir / state["optimizer_file"]
                opt_tensors = load_file(str(reading))
                break
            except Exception as exc:  # hand-edited, damaged or copied between machines: say which and what to do
                failures.append(f"{reading.name}: {type(exc).__name__}: {exc}")
        else:
            raise EmovoxError(
                f"{current}: cannot resume from this checkpoint ({'; '.join(failures)}); delete "
                f"{self.run_dir} (or run with --fresh) to train this part again"
            ) from None
        if failures and distributed.is_main():  # an older kept checkpoint (keep_checkpoints > 1) becomes the newest
            import warnings

            from emovox.errors import EmovoxWarning

            warnings.warn(
                f"{self.run_dir}: the newest checkpoint cannot be read ({'; '.join(failures)}); resuming from the "
                f"older kept checkpoint {_tag_of(state)} instead (the run still ends with the same numbers)",
                EmovoxWarning,
                stacklevel=2,
            )
            atomic_write_json(current, state)
            keep = {STATE_FILE, state["model_file"], state["optimizer_file"]}
            for name, old in self._older_states():
                if _position(old) < _position(state):
                    keep |= {name, old["model_file"], old["optimizer_file"]}
            clear_resume_state(self.run_dir, keep=keep)
        load_trainable_state(model, model_tensors)
        torch.set_rng_state(opt_tensors.pop("__torch_rng__"))
        optimizer.load_state_dict(optimizer_from_flat(opt_tensors, state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(_python_rng(state["python_rng"]))
        kind, keys, pos, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        return state

    def save_best(self, model: nn.Module) -> None:
        if self.run_dir is not None and not distributed.is_main():
            pass  # the main process writes the checkpoint; this one reads it back after the epoch's barrier
        elif self.run_dir is not None:
            atomic_save_tensors(self.run_dir / BEST_FILE, learnt_state(model))
        else:
            self._best_in_memory = {k: v.detach().clone() for k, v in learnt_state(model).items()}

    def load_best(self, model: nn.Module) -> None:
        if self.run_dir is not None and (self.run_dir / BEST_FILE).is_file():
            load_trainable_state(model, load_file(str(self.run_dir / BEST_FILE)))
        elif self._best_in_memory is not None:
            load_trainable_state(model, self._best_in_memory)


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load what ``learnt_state`` saved; frozen weights (reloaded from the backbone itself) may be absent."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    frozen = frozen_names(model)
    really_missing = [k for k in missing if k not in frozen]
    if really_missing or unexpected:
        raise EmovoxError(f"checkpoint does not fit the model: missing {really_missing[:5]}, unexpected {list(unexpected)[:5]}")


def clear_resume_state(run_dir: Path, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Delete the resume checkpoint files of ``run_dir`` (all but ``keep``): once a fold is
    finished only its best weights matter, and each new epoch supersedes the previous one."""
    run_dir = Path(run_dir)
    for pattern in (*RESUME_GLOBS, STATE_FILE):
        for p in run_dir.glob(pattern):
            if p.name not in keep:
                p.unlink(missing_ok=True)


def _tag_of(state: dict) -> str:
    """A checkpoint's tag (states written before tags were recorded: from the model file's name)."""
    return state.get("tag") or state["model_file"][len("last_model.") : -len(".safetensors")]


def _position(state: dict) -> tuple[int, int]:
    """Order of checkpoints: optimizer steps done, then finished epochs."""
    return int(state.get("global_step", 0)), int(state["epoch"])


def _jsonable(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng(data):
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def remove_stale_temporaries(directory: Path, *, older_than: float | None = None) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files that a process killed mid-write left in ``directory``.

    In a directory that several processes write at once (a run directory shared by fold jobs),
    a fresh temporary may be another process's write in flight: ``older_than`` (seconds) spares
    those, so only files nobody has touched for that long are removed.
    """
    import time

    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time()
    stale = []
    for p in directory.glob(".*.tmp"):
        try:
            if p.is_file() and (older_than is None or now - p.stat().st_mtime > older_than):
                stale.append(p)
        except FileNotFoundError:  # renamed into place by its writer meanwhile
            continue
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and plain JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict] = {}
    for pid, pstate in state["state"].items():
        plain_state[str(pid)] = {}
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value
            else:
                plain_state[str(pid)][name] = value
    return tensors, {"state": plain_state, "param_groups": state["param_groups"]}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(pid): dict(values) for pid, values in plain["state"].items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}

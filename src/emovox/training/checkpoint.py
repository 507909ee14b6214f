"""Atomic, pickle-free checkpoints.

Everything is safetensors (tensors) plus JSON (numbers, RNG state of Python's ``random``), so a
checkpoint from a stranger cannot run code when loaded, and a crash mid-write leaves the
previous checkpoint intact (write to a temporary file, fsync it, then ``os.replace``; the rename
is atomic, so a reader sees the old file or the new one, never half of one). A process killed
mid-write leaves at most a hidden ``.NAME.*.tmp`` file, which ``remove_stale_temporaries``
clears when the run resumes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from emovox.atomic import atomic_save_tensors, atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)


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


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


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

"""Hyperparameter search inside each fold, decided on the validation part only.

``search`` in a config maps dotted config fields to the values to try, e.g.::

    search:
      model.head: [logistic, mlp]
      model.layers: [all, [3, 4, 5, 6]]

Every combination (a grid: small by design, so its cost is visible in the config) is trained on
the fold's training part and scored by UA on its validation part (a held-out speaker group under
the strict protocol); the best one is the fold's model and only it ever sees the test part. Each
fold may choose differently (that is honest: the choice is part of the method), and every choice
with every candidate's validation UA is recorded in results.json. A search under ``validation:
paper`` would choose on the test fold, so it is refused.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

from emovox.errors import ConfigError

if TYPE_CHECKING:
    from emovox.config import ExperimentConfig

SEARCHABLE = ("model.", "train.")


def grid_points(search: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the search's values, in the order written (``[{}]`` without a search)."""
    if not search:
        return [{}]
    for key, values in search.items():
        if not key.startswith(SEARCHABLE) or key.startswith(("model.kind", "train.seed")):
            raise ConfigError(f"search: {key!r} cannot be searched; search model.* or train.* fields (not kind or seed)")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search: {key!r} needs a non-empty list of values to try")
    keys = list(search)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(search[k] for k in keys))]


def config_at(cfg: ExperimentConfig, point: dict[str, Any]) -> ExperimentConfig:
    """``cfg`` with the point's values set (re-validated like a YAML file with ``--set``)."""
    from emovox.config import config_from_dict, set_dotted

    if not point:
        return cfg
    data = json.loads(cfg.model_dump_json())
    data["search"] = None
    for key, value in point.items():
        set_dotted(data, key, value)
    return config_from_dict(data, f"search point {point}")


def describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items()) or "(no search)"

from pathlib import Path

import pytest

from emovox.config import load_config, parse_overrides
from emovox.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_every_recipe_is_a_valid_config():
    recipes = sorted(RECIPES.glob("*.yaml"))
    assert len(recipes) >= 19 + 12 + 2
    for path in recipes:
        cfg = load_config(path)
        assert cfg.name == path.stem


def test_overrides_are_typed_and_nested(tmp_path):
    assert parse_overrides(["train.lr=1e-4", "model.mode=frozen", "folds=[1,2]"]) == {
        "train": {"lr": 1e-4}, "model": {"mode": "frozen"}, "folds": [1, 2]
    }
    cfg = load_config(RECIPES / "emodb-whisper-base-frozen.yaml", ["train.lr=0.5", "train.seed=7"])
    assert cfg.train.lr == 0.5 and cfg.train.seed == 7


def test_unknown_keys_and_bad_values_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: emodb:x\nprotocol: leave-one-speaker-out\nmodel: {backbone: bert-base, mdoe: frozen}\n")
    with pytest.raises(ConfigError, match="model.mdoe"):
        load_config(bad)
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(RECIPES / "emodb-whisper-base-frozen.yaml", ["train.lr=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")

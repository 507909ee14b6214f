from pathlib import Path

import pytest

from emovox.config import load_config, parse_overrides
from emovox.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_every_recipe_is_a_valid_config():
    recipes = sorted(RECIPES.glob("*/*.yaml"))
    assert len(recipes) >= 19 + 12 + 2
    for path in recipes:
        cfg = load_config(path)
        assert cfg.name == path.stem


def test_overrides_are_typed_and_nested(tmp_path):
    assert parse_overrides(["train.lr=1e-4", "model.mode=frozen", "folds=[1,2]"]) == {
        "train": {"lr": 1e-4}, "model": {"mode": "frozen"}, "folds": [1, 2]
    }
    cfg = load_config(RECIPES / "emodb" / "emodb-whisper-base-frozen.yaml", ["train.lr=0.5", "train.seed=7"])
    assert cfg.train.lr == 0.5 and cfg.train.seed == 7


def test_unknown_keys_and_bad_values_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: emodb:x\nprotocol: leave-one-speaker-out\nmodel: {backbone: bert-base, mdoe: frozen}\n")
    with pytest.raises(ConfigError, match="model.mdoe"):
        load_config(bad)
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(RECIPES / "emodb" / "emodb-whisper-base-frozen.yaml", ["train.lr=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match=r"--set 'corpus=\[ased:d\?s=01,02, emodb:e\]': the value is not valid YAML"):
        parse_overrides(["corpus=[ased:d?s=01,02, emodb:e]"])  # a bare '?' in a flow list: a clear error, no traceback
    assert parse_overrides(['corpus=["ased:d?s=01,02", "emodb:e"]']) == {"corpus": ["ased:d?s=01,02", "emodb:e"]}
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_local_model_paths_of_every_kind_are_taken_relative_to_the_recipe(tmp_path, monkeypatch):
    """A recipe run from another directory still finds its ./ paths: backbones and the LLM kinds' models."""
    import yaml

    from emovox.config import load_config

    recipes = tmp_path / "project" / "recipes"
    for name in ("lm", "whisper"):
        (recipes / name).mkdir(parents=True)
    (recipes / "audio-llm.yaml").write_text(yaml.safe_dump({
        "name": "x", "corpus": "emodb:./data", "protocol": "leave-one-speaker-out",
        "model": {"kind": "audio-llm", "llm": "./lm", "audio": "./whisper"},
    }))
    (recipes / "hub.yaml").write_text(yaml.safe_dump({
        "name": "y", "corpus": "emodb:./data", "protocol": "leave-one-speaker-out",
        "model": {"kind": "audio-llm", "llm": "smollm2-135m-instruct", "audio": "openai/whisper-base"},
    }))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(recipes / "audio-llm.yaml")
    assert cfg.model.llm == str((recipes / "lm").resolve()) and cfg.model.audio == str((recipes / "whisper").resolve())
    hub = load_config(recipes / "hub.yaml")  # registry names and hub ids are not paths
    assert hub.model.llm == "smollm2-135m-instruct" and hub.model.audio == "openai/whisper-base"

"""Every recipe is in ``recipes/index.yaml`` with its expected figure, and every recipe runs, tiny.

As SpeechBrain's ``tests/recipes`` do: each recipe is loaded as written (a valid config whose name is its file's),
then run by ``emovox cv`` on one fold with its corpus format, protocol, label policy, model kind, branches, modes,
heads and training settings kept, and only what makes it slow swapped out: the corpus for a small synthetic tree
of the same format (same reader, same query options such as ``labels=4`` or ``sentences=01,02``), each backbone for
the tiny random build of the same family (``tiny: true``), each LLM for the tiny offline Llama, one epoch. A recipe
that cannot be made tiny says why in the index (``smoke:``) and is config-validated only.

The expected figures are checked against the document that records them: the figure must stand on a line of that
document that names the recipe, so a figure cannot be edited in one place and forgotten in the other.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import yaml
from corpus_fixtures import make_ased_tree, make_iemocap_tree, make_meld_tree, make_ravdess_tree

from emovox.config import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
INDEX = yaml.safe_load((RECIPES / "index.yaml").read_text(encoding="utf-8"))["recipes"]
#: Folder of a recipe <- the format of its corpus (several corpora: ``multi``).
FOLDERS = {"emodb", "ravdess", "iemocap", "meld", "ased", "multi"}


def test_every_recipe_file_is_in_the_index_once_in_the_folder_of_its_corpus():
    files = sorted(p.relative_to(RECIPES).as_posix() for p in RECIPES.glob("**/*.yaml") if p.name != "index.yaml")
    listed = [e["recipe"] for e in INDEX]
    assert sorted(listed) == files and len(set(listed)) == len(listed)
    for entry in INDEX:
        raw = yaml.safe_load((RECIPES / entry["recipe"]).read_text(encoding="utf-8"))
        corpus = raw["corpus"]
        folder = "multi" if isinstance(corpus, list) else corpus.split(":", 1)[0]
        assert folder in FOLDERS and entry["recipe"].split("/")[0] == folder, entry["recipe"]
        assert entry["smoke"] == "run" or entry["smoke"].startswith("config only: "), entry["recipe"]


def test_each_folder_has_a_readme_table_of_its_recipes():
    for folder in FOLDERS:
        readme = (RECIPES / folder / "README.md").read_text(encoding="utf-8")
        for entry in INDEX:
            if entry["recipe"].startswith(folder + "/"):
                assert f"`{Path(entry['recipe']).name}`" in readme, (folder, entry["recipe"])


@pytest.mark.parametrize("entry", [e for e in INDEX if e.get("expected")], ids=lambda e: e["recipe"])
def test_an_expected_figure_stands_where_the_index_says_it_is_recorded(entry):
    expected = entry["expected"]
    doc = REPO / expected["recorded"].split("#")[0]
    name = Path(entry["recipe"]).name
    lines = [line for line in doc.read_text(encoding="utf-8").splitlines() if name in line]
    assert any(f"{expected['value']:.2f}" in line for line in lines), (
        f"{doc.name} has no line naming {name} with {expected['metric']} {expected['value']:.2f}"
    )


# --- the smoke run ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def figures_built_not_drawn(monkeypatch):
    """The smoke runs build every figure of their reports (the plotting code runs) but do not rasterise them:
    drawing PNGs was half of these runs' time, and tests/test_reporting.py checks the pictures."""
    from emovox.evaluation import reporting

    def save(fig, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(reporting, "_save_figure", save)


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory) -> dict[str, Path]:
    """One small tree per corpus format, big enough for each recipe's protocol: EmoDB 4 speakers (strict
    validation needs 3 groups besides the test one), RAVDESS 6 actors (``speaker-groups:6``), IEMOCAP 3 sessions,
    ASED 5 speakers (``speaker-groups:5``), MELD with every emotion in each official part."""
    root = tmp_path_factory.mktemp("recipe-corpora")
    return {
        "emodb": _emodb_tree(root),
        "ravdess": make_ravdess_tree(root, actors=(1, 2, 3, 4, 5, 6), seconds=0.5),
        "iemocap": make_iemocap_tree(root, sessions=3, seconds_scale=0.5),
        "meld": make_meld_tree(root, rows=_meld_rows()),
        "ased": make_ased_tree(root, speakers=(1, 2, 3, 4, 5), seconds=0.3),
    }


def _emodb_tree(root: Path) -> Path:
    """EmoDB's naming (speaker, text, emotion letter, version) for 4 speakers x 7 emotions, two texts each."""
    from corpus_fixtures import LABEL_TONES, write_tone

    from emovox.labels import EMODB_CODES

    base = root / "emodb"
    for speaker in ("03", "08", "09", "10"):
        for letter in "WLEAFTN":
            for text in ("a01", "b02"):
                write_tone(base / "wav" / f"{speaker}{text}{letter}a.wav", 0.3, freq=LABEL_TONES[EMODB_CODES[letter]])
    return base


MELD_LINES = {"neutral": "the train leaves at nine", "joy": "what a wonderful day", "surprise": "no way, really?",
              "anger": "I am furious with you", "sadness": "I miss her so much", "disgust": "that is gross",
              "fear": "please do not hurt me"}


def _meld_rows() -> tuple:
    """MELD's columns with every emotion in each official part, as dialogues of alternating speakers."""
    rows = []
    for part, copies in (("train", 2), ("dev", 1), ("test", 1)):
        for dialogue in range(copies):
            for turn, (emotion, text) in enumerate(MELD_LINES.items()):
                rows.append((part, dialogue, turn, ("Ross", "Rachel")[turn % 2], emotion, f"{text} ({part} {dialogue})"))
    return tuple(rows)


def tiny_model(section):
    """The model section with every backbone replaced by the tiny build of its family, every LLM by the tiny Llama."""
    if isinstance(section, list):
        return [tiny_model(x) for x in section]
    if not isinstance(section, dict):
        return section
    out = {k: tiny_model(v) for k, v in section.items()}
    # the tiny builds have TINY_STATES hidden states: indices above are clamped, candidates deduplicated
    if isinstance(out.get("layer_sets"), list):
        out["layer_sets"] = _unique([_clamp(c) for c in out["layer_sets"]])
    if isinstance(out.get("layers"), list):
        out["layers"] = _unique(_clamp(out["layers"]))
    if isinstance(out.get("C"), list):
        out["C"] = out["C"][:2]  # a search over two values runs the search; the recipe's full grid is its cost, not its code
    if isinstance(out.get("top_layers"), int):
        out["top_layers"] = min(out["top_layers"], TINY_STATES - 1)
    if "backbone" in out:
        out["backbone"], out["tiny"] = _family_name(out["backbone"]), True
    if out.get("kind") in ("llm-classifier", "audio-llm"):
        out["llm"] = "tiny:llama"
    if out.get("kind") == "audio-llm":
        out["audio"], out["audio_tiny"] = _family_name(out["audio"]), True
    return out


#: Hidden states of a tiny build (embeddings + ``emovox.backbones.tiny.LAYERS`` layers).
TINY_STATES = 3


def _clamp(value):
    if isinstance(value, list):
        return _unique([_clamp(v) for v in value]) if all(isinstance(v, int) for v in value) else [_clamp(v) for v in value]
    return min(value, TINY_STATES - 1) if isinstance(value, int) and value >= 0 else value


def _unique(items: list) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _family_name(backbone: str) -> str:
    """A local model directory (``../shared/models/whisper-base``) -> its registry name, so that no test needs it."""
    return Path(backbone).name if backbone.startswith((".", "/")) else backbone


def tiny_recipe(raw: dict, corpora: dict[str, Path], cache: Path) -> dict:
    data = copy.deepcopy(raw)
    specs = data["corpus"] if isinstance(data["corpus"], list) else [data["corpus"]]
    tiny_specs = []
    for spec in specs:
        fmt, rest = spec.split(":", 1)
        query = rest.partition("?")[2]
        tiny_specs.append(f"{fmt}:{corpora[fmt]}" + (f"?{query}" if query else ""))
    data["corpus"] = tiny_specs if isinstance(data["corpus"], list) else tiny_specs[0]
    data.pop("control", None)  # the text-only control's ASR is a real Whisper
    data.update(folds=[1], cache_dir=str(cache))
    train = data.setdefault("train", {})
    train.update(max_epochs=1, patience=1, threads=1, batch_size=min(int(train.get("batch_size", 8)), 8))
    data["model"] = tiny_model(data.get("model", {}))
    return data


@pytest.mark.parametrize("entry", INDEX, ids=lambda e: e["recipe"])
def test_the_recipe_runs_tiny(entry, tiny_corpora, tmp_path):
    from emovox.training.runner import run_cv

    path = RECIPES / entry["recipe"]
    cfg = load_config(path)  # as written: a valid config, named after its file
    assert cfg.name == path.stem
    if entry["smoke"] != "run":
        return  # the index says why it cannot run tiny
    if cfg.model.kind == "classifier" and str(getattr(cfg.model, "backbone", "")).startswith("opensmile"):
        pytest.importorskip("opensmile", reason="pip install 'emovox[opensmile]'")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    tiny = config_from_dict(tiny_recipe(raw, tiny_corpora, tmp_path / "cache"), str(path))
    assert (tiny.protocol, tiny.validation, tiny.model.kind) == (cfg.protocol, cfg.validation, cfg.model.kind)
    out = tmp_path / "run"
    result = run_cv(tiny, out, progress=False)
    assert result["protocol"] == cfg.protocol and len(result["folds"]) == 1
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tested = [json.loads(line)["id"] for line in (out / "splits" / "fold_1" / "test.jsonl").read_text().splitlines()]
    # every prediction is of a test utterance (a text recipe leaves out the ones without a transcript)
    assert {r["id"] for r in rows} <= set(tested) and result["folds"][0]["n"] == len(rows) > 0
    assert {r["pred"] for r in rows} <= set(result["label_set"])

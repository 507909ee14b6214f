"""openSMILE functionals as a backbone family: opensmile's own features, cached, trained on, saved, predicted.

Real EmoDB clips (``../shared``) and the real opensmile package; every test skips with a reason
where either is absent. eGeMAPS (88 features) keeps them fast; ComParE (6,373) is checked once
against opensmile's ``process_file``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

opensmile = pytest.importorskip("opensmile", reason="the opensmile package is not installed (pip install 'emovox[opensmile]')")

from emovox.audio import load_audio  # noqa: E402
from emovox.backbones import smile as smile_module  # noqa: E402
from emovox.backbones.loader import load_backbone  # noqa: E402
from emovox.backbones.registry import EMOVOX_FILE  # noqa: E402
from emovox.backbones.smile import OpenSmileVersionWarning, SmileExtractor  # noqa: E402
from emovox.cache import FeatureCache  # noqa: E402
from emovox.cli import app  # noqa: E402
from emovox.data.examples import Example, example_length  # noqa: E402
from emovox.errors import BackboneError, ConfigError, EmovoxWarning, RecognizerError  # noqa: E402
from emovox.inference.recognizer import Recognizer  # noqa: E402
from emovox.models.classifier import ClassifierConfig, ClassifierModel  # noqa: E402
from emovox.models.extraction import extract_pooled  # noqa: E402

#: angry (W), happy (F), sad (T) and neutral (N) clips of four speakers, extracted in about two seconds:
#: angry and happy are what eGeMAPS confuses most on EmoDB, so probabilities stay away from 0 and 1
FOUR = ("03a01Wa", "03a02Wb", "03a01Fa", "03a02Fc", "03a02Ta", "03a04Ta", "03a01Nc", "03a02Nc",
        "08a01Wa", "08a01Wc", "08a01Fd", "08a02Fe", "08a02Tb", "08a04Tb", "08a01Na", "08a02Na",
        "09a01Wb", "09a02Wb", "09a01Fa", "09a04Fd", "09a05Tb", "09a07Ta", "09a01Nb", "09a04Nb",
        "10a01Wa", "10a02Wa", "10a02Fa", "10a04Fd", "10a05Tb", "10a07Ta", "10a01Nb", "10a02Na")
#: a file with an EmoDB name that is not audio: `on_bad_audio: skip` leaves it out and says so
BROKEN = "03b99Wz"


def smile(feature_set: str):
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals)


@pytest.mark.parametrize(("name", "feature_set", "width"), [("opensmile-egemaps", "eGeMAPSv02", 88),
                                                            ("opensmile-compare", "ComParE_2016", 6373)])
def test_functionals_are_opensmiles_own_on_a_real_clip(emodb_dir, name, feature_set, width):
    path = emodb_dir / "wav" / "03a01Fa.wav"
    expected = smile(feature_set).process_file(str(path)).to_numpy(dtype=np.float32)[0]
    backbone = load_backbone(name)
    assert (backbone.hidden_size, backbone.num_layers, backbone.learned) == (width, 1, False)
    clip = load_audio(path)  # emovox's decoding: 16 kHz mono float32
    pooled = extract_pooled(backbone, [clip, clip[:8000]], progress=False)  # what a frozen branch caches
    assert pooled.shape == (2, 1, width) and pooled.dtype == torch.float32
    np.testing.assert_array_equal(pooled[0, 0].numpy(), expected)  # bit for bit: one "frame", its mean is itself
    shorter = smile(feature_set).process_signal(clip[:8000], 16000).to_numpy(dtype=np.float32)[0]
    np.testing.assert_array_equal(pooled[1, 0].numpy(), shorter)  # a batch never mixes its clips


def test_samples_beyond_full_scale_saturate_instead_of_wrapping(emodb_dir):
    """openSMILE turns floats into int16 by ``x * 32768`` without saturation: a resampled peak above 1.0 would
    wrap to a large negative sample. emovox clips to the 16-bit range first, as a 16-bit file would hold it."""
    loud = 4.0 * load_audio(emodb_dir / "wav" / "03a01Wa.wav")
    assert np.abs(loud).max() > 1.0
    ours = load_backbone("opensmile-egemaps").preprocess([loud])["functionals"][0].numpy()
    saturated = smile("eGeMAPSv02").process_signal(np.clip(loud, -1.0, 32767 / 32768), 16000).to_numpy(dtype=np.float32)[0]
    wrapped = smile("eGeMAPSv02").process_signal(loud, 16000).to_numpy(dtype=np.float32)[0]
    np.testing.assert_array_equal(ours, saturated)
    assert not np.allclose(ours, wrapped)


def emodb_examples(emodb_dir: Path, stems=FOUR[:3]) -> list[Example]:
    clips = [load_audio(emodb_dir / "wav" / f"{s}.wav") for s in stems]
    return [Example(s, 0, audio=c, length=example_length(c, None)) for s, c in zip(stems, clips, strict=True)]


def test_a_second_run_reads_the_cache_and_another_opensmile_version_does_not(emodb_dir, tmp_path, monkeypatch):
    calls: list[int] = []
    extract = SmileExtractor.__call__

    def counted(self, clip):
        calls.append(clip.size)
        return extract(self, clip)

    monkeypatch.setattr(SmileExtractor, "__call__", counted)
    config = ClassifierConfig(backbone="opensmile-egemaps", mode="frozen", std_floor=0.0)
    examples = emodb_examples(emodb_dir)

    def run() -> torch.Tensor:
        model = ClassifierModel.build(config, ["angry", "happy"])  # a fresh backbone and a fresh cache object each time
        prepared = model.prepare(examples, cache=FeatureCache(tmp_path / "cache"), progress=False)
        return torch.stack([e.cached[model.branch.slot]["pooled"] for e in prepared])

    first = run()
    assert len(calls) == 3 and first.shape == (3, 1, 88)
    second = run()
    assert len(calls) == 3  # nothing extracted again
    assert torch.equal(first, second)
    monkeypatch.setattr(smile_module, "installed_version", lambda: "2.6.0+other")
    run()
    assert len(calls) == 6  # the cache keys on the opensmile version: another version extracts anew


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "finetune"}, "no weights to train: use mode: frozen"),
        ({"mode": "finetune-frozen-cnn"}, "use mode: frozen"),
        ({"mode": "finetune-top"}, "use mode: frozen"),
        ({"pooling": "stats"}, "no frames to pool; use pooling: auto"),
        ({"layers": [2, 3]}, r"one 'layer' \(index 0\), not \[2, 3\]; use layers: all"),
    ],
)
def test_what_cannot_apply_to_fixed_features_is_a_config_error(change, message):
    config = ClassifierConfig(**{"backbone": "opensmile-egemaps", "mode": "frozen", "std_floor": 0.0, **change})
    with pytest.raises(ConfigError, match=message):
        ClassifierModel.build(config, ["angry", "happy"])


def test_the_default_std_floor_is_named_as_wrong_for_functionals():
    with pytest.warns(EmovoxWarning, match="std_floor: 0"):
        ClassifierModel.build(ClassifierConfig(backbone="opensmile-egemaps", mode="frozen"), ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # set explicitly (any value): no warning
        ClassifierModel.build(ClassifierConfig(backbone="opensmile-egemaps", mode="frozen", std_floor=0.0), ["a", "b"])


def test_length_augmentation_of_functionals_is_named_as_harmful(emodb_dir, tmp_path):
    from emovox.data.augment import AugmentConfig

    model = ClassifierModel.build(ClassifierConfig(backbone="opensmile-egemaps", mode="frozen", std_floor=0.0), ["a", "b"])
    model.augment = AugmentConfig()  # the default: random crops and silence padding
    with pytest.warns(EmovoxWarning, match="digital silence.*train.augment.length: false"):
        prepared = model.prepare(emodb_examples(emodb_dir, FOUR[:1]), cache=None, progress=False)
    assert len(prepared[0].cached[model.branch.slot]["variants"]) == 1  # a warning, not a refusal


# --- a recognizer trained on real clips --------------------------------------------------------------------


@pytest.fixture(scope="module")
def smile_run(emodb_dir, tmp_path_factory):
    """``emovox train`` of a frozen eGeMAPS logistic classifier on 16 real clips and one broken file."""
    from emovox.config import config_from_dict
    from emovox.training.final import train_recognizer

    root = tmp_path_factory.mktemp("smile")
    wav = root / "emodb" / "wav"
    wav.mkdir(parents=True)
    for stem in FOUR:
        (wav / f"{stem}.wav").symlink_to(emodb_dir / "wav" / f"{stem}.wav")
    (wav / f"{BROKEN}.wav").write_bytes(b"RIFF not really a wave file")
    cfg = config_from_dict({
        "name": "emodb-egemaps-test",
        "corpus": f"emodb:{root / 'emodb'}?labels=angry,happy,sad,neutral",
        "protocol": "leave-one-speaker-out",  # `emovox train` holds one speaker out, then refits on all
        "cache_dir": str(root / "cache"),
        "on_bad_audio": "skip",
        "model": {"backbone": "opensmile-egemaps", "mode": "frozen", "std_floor": 0.0, "head": "logistic",
                  "C": [0.01, 0.1], "select": "inner-logloss", "refit": True},
        "train": {"threads": 1, "augment": {"length": False}},  # the augmented copies are extracted by the cv runs
    })
    trained = train_recognizer(cfg, root / "recognizer", progress=False)
    return root, cfg, trained


def test_a_frozen_classifier_trains_and_its_saved_recognizer_predicts_what_the_run_computed(smile_run):
    root, cfg, trained = smile_run
    model_dir = root / "recognizer"
    info = json.loads((model_dir / "emovox.json").read_text())
    assert [s["id"] for s in info["training"]["skipped"]] == [BROKEN]  # on_bad_audio: skip named it
    assert info["training"]["choices"]["C"] in (0.01, 0.1) and info["training"]["choices"]["select"] == "inner-logloss"
    branch = model_dir / "branches" / "audio"
    assert sorted(p.name for p in branch.iterdir()) == [EMOVOX_FILE]  # no weights to save, only what computes them
    record = json.loads((branch / EMOVOX_FILE).read_text())["opensmile"]
    assert (record["feature_set"], record["version"], len(record["reference"])) == ("eGeMAPSv02", opensmile.__version__, 88)

    # the run's model on the features it cached, and the saved recognizer on the files
    paths = [root / "emodb" / "wav" / f"{s}.wav" for s in FOUR]
    examples = [Example(p.stem, 0, audio=load_audio(p), length=1.0) for p in paths]
    model = trained.model.eval()
    prepared = model.prepare(examples, cache=FeatureCache(cfg.cache_dir), progress=False)
    assert all(e.cached[model.branch.slot] is not None for e in prepared)
    with torch.no_grad():
        in_run = torch.softmax(model(model.collate(prepared)), -1).numpy()
    recognizer = Recognizer.load(model_dir)
    predicted = recognizer.predict([str(p) for p in paths])
    saved = np.array([[p.probabilities[label] for label in recognizer.labels] for p in predicted])
    assert (in_run.max(1) < 0.99).sum() >= 4  # not saturated: a small change in the features would show
    np.testing.assert_allclose(saved, in_run, rtol=0, atol=1e-6)

    # `emovox predict` on the recognizer, and its model card
    out = root / "predictions.json"
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(paths[0]), str(paths[2]), "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [row["probabilities"]["angry"] for row in rows] == pytest.approx([in_run[0, 0], in_run[2, 0]], abs=1e-6)
    card = " ".join((model_dir / "README.md").read_text().split())
    assert f"openSMILE eGeMAPSv02 functionals, 88 per clip, computed by the opensmile package {opensmile.__version__}" in card


def test_a_recognizer_is_refused_where_the_installed_opensmile_computes_other_features(smile_run, monkeypatch):
    root, _, _ = smile_run
    model_dir = root / "recognizer"
    trained_with = opensmile.__version__
    monkeypatch.setattr(smile_module, "installed_version", lambda: "9.9.9")
    with pytest.warns(OpenSmileVersionWarning, match=f"trained with opensmile {trained_with}, installed 9.9.9"):
        Recognizer.load(model_dir)  # another version, the same features on the reference signal: loads, with a warning
    extract = SmileExtractor.__call__
    monkeypatch.setattr(SmileExtractor, "__call__", lambda self, clip: extract(self, clip) * np.float32(1.01))
    with pytest.raises(RecognizerError, match=rf"branches/audio: trained on opensmile {trained_with}'s eGeMAPSv02 "
                                              rf"features, but the installed opensmile 9\.9\.9 computes different ones.*"
                                              rf"pip install opensmile=={trained_with}"):
        Recognizer.load(model_dir)
    monkeypatch.setattr(smile_module, "installed_version", lambda: None)
    with pytest.raises(BackboneError, match=f"needs the opensmile package it was trained with: pip install opensmile=={trained_with}"):
        load_backbone(model_dir / "branches" / "audio")

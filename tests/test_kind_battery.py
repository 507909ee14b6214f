"""One battery of checks over every registered model kind (``models.registry.KINDS``), after scikit-learn's
``parametrize_with_checks``: each check is a function of (kind, a tiny built model), parametrized over every kind,
so a new kind is checked the day it is registered (a kind without a tiny config here fails the first test).

The checks: the kind builds from its config through the registry; its ``collate`` makes a batch of what it reads;
its logits are ``[batch, labels]`` and finite; saved as a recognizer directory and loaded back it gives the same
logits; every trainable parameter is in exactly one of the optimiser's parameter groups (a parameter left out never
trains, silently); a bad config (an unknown key, a value out of range) is refused with a ``ConfigError`` that names
the field. Tiny models only: seconds per kind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tone

from emovox.data.examples import Example
from emovox.errors import ConfigError
from emovox.models import registry

LABELS = ["low", "high"]
LORA = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}

#: kind -> (a tiny config, a bad value: (field, value)). Late fusion's members are filled in by ``configs``.
TINY: dict[str, tuple[dict, tuple[str, object]]] = {
    "classifier": ({"backbone": "wav2vec2-base", "tiny": True, "mode": "finetune", "layers": "all"}, ("dropout", 1.5)),
    "fusion": (
        {"branches": [{"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen"},
                      {"backbone": "bert-base", "tiny": True, "mode": "finetune"}], "projection": 16},
        ("projection", 0),
    ),
    "late-fusion": ({"hidden": [16], "members": None}, ("dropout", -0.1)),
    "llm-classifier": (
        {"llm": "tiny:llama", "label_words": {"low": "sadness", "high": "joy"}, "prompt": {"template": "Text: {text}",
         "chat": "never"}, "lora": LORA},
        ("mode", "bogus"),
    ),
    "audio-llm": ({"llm": "tiny:llama", "audio_tiny": True, "label_words": {"low": "sadness", "high": "joy"}},
                  ("frames_per_token", 0)),
    "qwen2-audio-lora": ({"tiny": True, "label_words": {"low": "sadness", "high": "joy"}}, ("lora", {"rank": 0})),
}


def test_every_registered_kind_is_in_the_battery():
    assert set(TINY) == set(registry.KINDS)


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[str]:
    """Two saved recognizers (audio, text) for late fusion to combine."""
    from emovox.inference.recognizer import Recognizer

    out = []
    root = tmp_path_factory.mktemp("members")
    for name, cfg in (("audio", {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen"}),
                      ("text", {"backbone": "bert-base", "tiny": True, "mode": "frozen"})):
        torch.manual_seed(0)
        model = registry.build(registry.parse_config(cfg), LABELS, seed=0)
        Recognizer(model.eval(), LABELS, {"name": f"member-{name}"}).save(root / name)
        out.append(str(root / name))
    return out


def config_of(kind: str, members: list[str]) -> dict:
    data = {"kind": kind, **TINY[kind][0]}
    if kind == "late-fusion":
        data["members"] = members
    return data


def examples(model, n: int = 4) -> list[Example]:
    """Clips (two pitches) and transcripts, with whatever fields the model reads."""
    fields = model.fields()
    out = []
    for i in range(n):
        target = i % 2
        clip = tone(180.0 if target == 0 else 520.0, 0.5 + 0.05 * i)
        text = f"{LABELS[target]} words number {i}"
        out.append(Example(
            f"u{i}", target, length=len(clip) / 16_000,
            audio=clip if "audio" in fields else None, text=text if "text" in fields else None,
            context_audio=clip if "context_audio" in fields else None,
            context_text=text if "context_text" in fields else None,
        ))
    return out


def logits(model, batch: list[Example]) -> torch.Tensor:
    model.eval()
    ready = model.prepare(list(batch), cache=None, progress=False)
    with torch.no_grad():
        return model(model.collate(ready))


@pytest.fixture(params=sorted(registry.KINDS))
def built(request, members):
    kind = request.param
    torch.manual_seed(0)
    model = registry.build(registry.parse_config(config_of(kind, members)), LABELS, seed=0)
    batch = examples(model)
    model.fit_statistics(model.prepare(list(batch), cache=None, progress=False))
    return kind, model, batch


# --- the checks -------------------------------------------------------------------------------------------------


def test_builds_through_the_registry_as_its_class(built):
    kind, model, _ = built
    assert isinstance(model, registry.kind_class(kind)) and model.kind == kind and list(model.labels) == LABELS
    assert model.fields() and model.fields() <= {"audio", "text", "context_audio", "context_text"}


def test_collate_batches_what_it_reads(built):
    _, model, batch = built
    inputs = model.collate(model.prepare(list(batch), cache=None, progress=False))
    assert isinstance(inputs, dict) and inputs
    assert any(torch.is_tensor(v) for v in _leaves(inputs)), "a batch without a tensor"


def test_logits_are_batch_by_labels_and_finite(built):
    _, model, batch = built
    out = logits(model, batch)
    assert out.shape == (len(batch), len(LABELS)) and bool(torch.isfinite(out).all())
    one = logits(model, batch[:1])  # a batch of one gives the same row (padding never leaks)
    torch.testing.assert_close(one[0], out[0], atol=1e-4, rtol=1e-4)


def test_saved_and_loaded_gives_the_same_logits(built, tmp_path):
    from emovox.inference.recognizer import Recognizer

    kind, model, batch = built
    with torch.no_grad():  # weights a fresh build would not have: a loader that ignores the file fails
        for name, p in model.named_parameters():
            if p.requires_grad and "backbone" not in name:
                p.add_(0.05 * torch.randn_like(p))
    before = logits(model, batch)
    Recognizer(model, LABELS, {"name": f"battery-{kind}"}).save(tmp_path / "rec")
    loaded = Recognizer.load(tmp_path / "rec").model
    assert type(loaded) is type(model)
    np.testing.assert_allclose(logits(loaded, batch).numpy(), before.numpy(), atol=1e-4, rtol=1e-4)


def test_every_trainable_parameter_is_in_exactly_one_optimiser_group(built):
    _, model, _ = built
    groups = model.param_groups(1e-4, 1e-3)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable, "nothing would train"
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups (stepped twice)"
    assert set(grouped) == trainable, f"{len(trainable - set(grouped))} trainable parameter(s) in no group"


@pytest.mark.parametrize("kind", sorted(registry.KINDS))
def test_a_bad_config_is_refused_naming_the_field(kind, members):
    data = config_of(kind, members)
    with pytest.raises(ConfigError, match="no_such_setting"):
        registry.parse_config({**data, "no_such_setting": 1})
    field, value = TINY[kind][1]
    with pytest.raises(ConfigError, match=field):
        registry.parse_config({**data, field: value})


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def test_the_battery_sees_a_kind_that_leaves_a_parameter_out(members, monkeypatch):
    """The optimiser check catches what it names: a kind whose groups miss its head."""
    cls = registry.kind_class("classifier")
    real = cls.param_groups

    def drops_the_head(self, lr, head_lr):
        return [{"params": [p for p in g["params"] if p is not self.head.linear.weight]} for g in real(self, lr, head_lr)]

    monkeypatch.setattr(cls, "param_groups", drops_the_head)
    model = registry.build(registry.parse_config(config_of("classifier", members)), LABELS, seed=0)
    with pytest.raises(AssertionError, match="in no group"):
        test_every_trainable_parameter_is_in_exactly_one_optimiser_group(("classifier", model, examples(model)))

"""Protocols over several corpora: leave-one-corpus-out, cross-corpus, in-corpus, pooled speaker groups.

Each is proven as splits.py proves every protocol (``Fold.check``, ``check_folds``), now also by
corpus; the tests break a fold on purpose to see the proof refuse it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from emovox.corpora import LabelPolicy, load_corpora
from emovox.errors import SplitError
from emovox.splits.fold import check_folds, write_folds
from emovox.splits.protocols import make_folds


@pytest.fixture(scope="module")
def pooled(pseudo_corpora):
    return load_corpora(list(pseudo_corpora.values()), LabelPolicy("all", {"calm": "neutral"}))


def _corpora(corpus, ids) -> set[str]:
    return {corpus[i].corpus for i in ids}


def _speakers(corpus, ids) -> set[str]:
    return {corpus[i].speaker for i in ids}


def test_leave_one_corpus_out_is_disjoint_by_corpus_and_speaker(pooled) -> None:
    folds = make_folds(pooled, "leave-one-corpus-out")
    assert [f.name for f in folds] == ["alpha", "beta", "gamma"]
    for f in folds:
        assert _corpora(pooled, f.test) == {f.name}
        assert f.name not in _corpora(pooled, f.train) | _corpora(pooled, f.valid)
        assert not _speakers(pooled, f.test) & (_speakers(pooled, f.train) | _speakers(pooled, f.valid))
        assert not _speakers(pooled, f.valid) & _speakers(pooled, f.train)
        # validation: a speaker group of every training corpus (each has 2-3 speakers here)
        assert _corpora(pooled, f.valid) == _corpora(pooled, f.train)
        assert f.corpus_independent and f.speaker_independent
    assert sorted(i for f in folds for i in f.test) == sorted(u.id for u in pooled)


def test_the_proof_refuses_a_fold_that_trains_on_its_test_corpus(pooled) -> None:
    fold = make_folds(pooled, "leave-one-corpus-out")[0]
    leak = next(i for i in fold.test)
    bad = replace(fold, train=(*fold.train, leak), test=tuple(i for i in fold.test if i != leak))
    with pytest.raises(SplitError, match="corpus alpha is both tested and in train"):
        bad.check(pooled)
    # the same fold without the corpus promise passes the speaker proof only if speakers are disjoint: they are not
    with pytest.raises(SplitError, match="appear in both train and test"):
        replace(bad, corpus_independent=False).check(pooled)


def test_cross_corpus_trains_on_the_named_corpora_and_tests_once(pooled) -> None:
    (fold,) = make_folds(pooled, "cross-corpus:alpha+gamma:beta")
    assert fold.name == "alpha+gamma -> beta"
    assert _corpora(pooled, fold.test) == {"beta"} and _corpora(pooled, fold.train) == {"alpha", "gamma"}
    assert len(fold.test) == sum(u.corpus == "beta" for u in pooled)
    (rest,) = make_folds(pooled, "cross-corpus:beta")  # TEST omitted: every other corpus
    assert _corpora(pooled, rest.test) == {"alpha", "gamma"} and _corpora(pooled, rest.train) == {"beta"}
    (paper,) = make_folds(pooled, "cross-corpus:beta", validation="paper")
    assert paper.valid == paper.test and paper.corpus_independent
    with pytest.raises(SplitError, match="neither trained nor tested"):
        make_folds(pooled, "cross-corpus:alpha:beta")
    with pytest.raises(SplitError, match="both trained and tested"):
        make_folds(pooled, "cross-corpus:alpha+beta:beta+gamma")
    with pytest.raises(SplitError, match=r"must be distinct names of the run's corpora \['alpha', 'beta', 'gamma'\]"):
        make_folds(pooled, "cross-corpus:emodb")


def test_in_corpus_folds_stay_inside_each_corpus(pooled) -> None:
    folds = make_folds(pooled, "in-corpus:2", validation="paper")
    assert len(folds) == 6 and [f.scope for f in folds] == [("alpha",)] * 2 + [("beta",)] * 2 + [("gamma",)] * 2
    for f in folds:
        assert _corpora(pooled, f.train) == _corpora(pooled, f.test) == set(f.scope)
        assert not _speakers(pooled, f.train) & _speakers(pooled, f.test)
    assert folds[0].name == "alpha speaker 01"
    check_folds(folds, pooled)  # every utterance tested exactly once over the run
    bad = replace(folds[0], train=folds[0].train[1:])
    with pytest.raises(SplitError, match="do not cover corpora alpha"):
        bad.check(pooled)
    with pytest.raises(SplitError, match="corpus alpha has 2 speakers, too few for 3 groups"):
        make_folds(pooled, "in-corpus:3")


def test_pooled_speaker_groups_spread_every_corpus_over_the_groups(pooled) -> None:
    folds = make_folds(pooled, "speaker-groups:2", validation="paper")
    for f in folds:  # not one corpus per group: each group holds speakers of every corpus
        assert _corpora(pooled, f.test) == {"alpha", "beta", "gamma"}
        assert not _speakers(pooled, f.train) & _speakers(pooled, f.test)
    assert len(make_folds(pooled, "leave-one-speaker-out", validation="paper")) == len(pooled.speakers)
    with pytest.raises(SplitError, match="needs at least 2 corpora"):
        make_folds(pooled.subset([u.id for u in pooled if u.corpus == "beta"]), "leave-one-corpus-out")


def test_folds_json_records_every_corpus(pooled, tmp_path) -> None:
    folds = make_folds(pooled, "leave-one-corpus-out")
    write_folds(folds, pooled, tmp_path)
    summary = json.loads((tmp_path / "folds.json").read_text())
    assert [c["name"] for c in summary["corpora"]] == ["alpha", "beta", "gamma"]
    assert all(len(c["fingerprint"]) == 16 for c in summary["corpora"])
    assert summary["folds"][1]["corpora"] == {"train": ["alpha", "gamma"], "valid": ["alpha", "gamma"], "test": ["beta"]}
    assert summary["folds"][1]["corpus_independent"] is True
    line = json.loads((tmp_path / "fold_2" / "test.jsonl").read_text().splitlines()[0])
    assert line["corpus"] == "beta" and line["id"].startswith("beta/") and line["speaker"].startswith("beta/")


def test_the_splits_command_pools_several_specs(pseudo_corpora, tmp_path) -> None:
    from typer.testing import CliRunner

    from emovox.cli import app

    r = CliRunner().invoke(app, ["splits", *pseudo_corpora.values(), "-p", "leave-one-corpus-out", "--out", str(tmp_path)],
                           env={"COLUMNS": "200"})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "corpus-independent: checked" in r.output
    summary = json.loads((tmp_path / "folds.json").read_text())
    assert summary["labels"] == ["angry", "fearful", "neutral", "sad"]  # several specs: the classes they share
    assert [f["corpora"]["test"] for f in summary["folds"]] == [["alpha"], ["beta"], ["gamma"]]

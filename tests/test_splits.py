"""Protocols: the folds they make, the promises they prove, and the JSONL they write."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split
from typer.testing import CliRunner

from emovox.corpora.base import Corpus, Utterance
from emovox.errors import SplitError
from emovox.splits.fold import check_folds, natural_sorted, write_folds
from emovox.splits.protocols import VALID_FRACTION, make_folds

LABELS = ("angry", "happy", "neutral", "sad")


def make_corpus(speakers: list[str], per_speaker: int = 8, session_of=None, labels=LABELS, label_of=None) -> Corpus:
    """Every speaker says ``per_speaker`` utterances cycling through the labels."""
    utts = []
    for s in speakers:
        for i in range(per_speaker):
            label = label_of(s, i) if label_of else labels[i % len(labels)]
            utts.append(
                Utterance(
                    id=f"{s}_{i:03d}",
                    speaker=s,
                    label=label,
                    corpus_label=label[:3],
                    session=session_of(s) if session_of else None,
                )
            )
    return Corpus("toy", utts, tuple(labels), spec="toy:/nowhere")


def iemocap_like() -> Corpus:
    speakers = [f"Ses0{k}{g}" for k in range(1, 6) for g in "FM"]
    return make_corpus(speakers, session_of=lambda s: f"Session{s[4]}")


def ravdess_like() -> Corpus:
    return make_corpus([f"{a:02d}" for a in range(1, 25)], per_speaker=4)


def test_leave_one_session_out_paper_validates_on_the_test_session() -> None:
    corpus = iemocap_like()
    folds = make_folds(corpus, "leave-one-session-out", validation="paper")
    assert [f.name for f in folds] == [f"Session{k}" for k in range(1, 6)]
    assert [f.index for f in folds] == [1, 2, 3, 4, 5]
    for f in folds:
        assert {corpus[i].session for i in f.test} == {f.name}
        assert f.valid == f.test
        assert f.name not in {corpus[i].session for i in f.train}
        assert len(f.train) == 4 * 16 and len(f.test) == 16
        assert f.speaker_independent and f.protocol == "leave-one-session-out" and f.validation == "paper"


def test_leave_one_session_out_strict_holds_out_the_next_whole_session() -> None:
    corpus = iemocap_like()
    folds = make_folds(corpus, "leave-one-session-out", validation="strict")
    for k, f in enumerate(folds):
        test_session = f"Session{k + 1}"
        valid_session = f"Session{(k + 1) % 5 + 1}"
        assert {corpus[i].session for i in f.test} == {test_session}
        assert {corpus[i].session for i in f.valid} == {valid_session}
        assert {corpus[i].session for i in f.train} == {f"Session{j}" for j in range(1, 6)} - {test_session, valid_session}
        assert not set(f.speakers(corpus, "train")) & set(f.speakers(corpus, "valid"))
    # every session validates exactly once
    assert Counter(corpus[f.valid[0]].session for f in folds) == Counter({f"Session{k}": 1 for k in range(1, 6)})


def test_leave_one_session_out_needs_sessions() -> None:
    corpus = make_corpus(["a", "b", "c"])
    with pytest.raises(SplitError, match="session"):
        make_folds(corpus, "leave-one-session-out")


def test_leave_one_session_out_refuses_speakers_shared_across_sessions() -> None:
    # Speaker ids "F"/"M" reused in every session: the protocol would leak speakers, and must say so.
    utts = [
        Utterance(id=f"{k}{g}{i}", speaker=g, label=LABELS[i % 4], corpus_label="x", session=f"Session{k}")
        for k in range(1, 4)
        for g in "FM"
        for i in range(4)
    ]
    corpus = Corpus("shared", utts, LABELS)
    with pytest.raises(SplitError, match="not speaker-independent"):
        make_folds(corpus, "leave-one-session-out", validation="paper")


def test_speaker_groups_ravdess_six_groups_of_four_contiguous_actors() -> None:
    corpus = ravdess_like()
    folds = make_folds(corpus, "speaker-groups:6", validation="paper")
    assert len(folds) == 6
    for k, f in enumerate(folds):
        expected = [f"{a:02d}" for a in range(4 * k + 1, 4 * k + 5)]
        assert f.speakers(corpus, "test") == expected
        assert f.name == "speakers " + ",".join(expected)
        # RAVDESS: odd actors male, even female -> contiguous groups are gender balanced
        assert sum(int(a) % 2 for a in expected) == 2
        assert not set(f.speakers(corpus, "train")) & set(expected)


def test_speaker_groups_are_balanced_and_in_natural_order() -> None:
    speakers = ["spk10", "spk2", "spk1", "spk9", "spk3", "spk4", "spk5", "spk6", "spk7", "spk8"]
    corpus = make_corpus(speakers, per_speaker=4)
    folds = make_folds(corpus, "speaker-groups:3")
    groups = [f.speakers(corpus, "test") for f in folds]
    assert groups == [["spk1", "spk2", "spk3", "spk4"], ["spk5", "spk6", "spk7"], ["spk8", "spk9", "spk10"]]
    assert natural_sorted(["b10", "a", "b2", "B1"]) == ["a", "B1", "b2", "b10"]


def test_speaker_groups_strict_validates_on_the_next_group() -> None:
    corpus = ravdess_like()
    folds = make_folds(corpus, "speaker-groups:6", validation="strict")
    for k, f in enumerate(folds):
        next_group = folds[(k + 1) % 6].speakers(corpus, "test")
        assert f.speakers(corpus, "valid") == next_group
        train = set(f.speakers(corpus, "train"))
        assert len(train) == 16
        assert not train & set(next_group) and not train & set(f.speakers(corpus, "test"))
        assert not set(f.valid) & set(f.test)


def test_leave_one_speaker_out_is_one_speaker_per_fold() -> None:
    emodb_speakers = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    corpus = make_corpus(emodb_speakers)
    loso = make_folds(corpus, "leave-one-speaker-out")
    groups = make_folds(corpus, "speaker-groups:10")
    assert [f.speakers(corpus, "test") for f in loso] == [[s] for s in emodb_speakers]
    assert [f.test for f in loso] == [f.test for f in groups]
    assert loso[0].name == "speaker 03"


def test_speaker_groups_shuffle_is_seeded_and_still_balanced() -> None:
    corpus = ravdess_like()
    a = make_folds(corpus, "speaker-groups:6:shuffle", seed=1)
    b = make_folds(corpus, "speaker-groups:6:shuffle", seed=1)
    c = make_folds(corpus, "speaker-groups:6:shuffle", seed=2)
    assert a == b
    assert [f.test for f in a] != [f.test for f in c]
    assert [f.test for f in a] != [f.test for f in make_folds(corpus, "speaker-groups:6")]
    assert all(len(f.speakers(corpus, "test")) == 4 for f in a)


@pytest.mark.parametrize(
    "protocol, validation, match",
    [
        ("speaker-groups:25", "paper", "25 speaker groups need at least 25 speakers.*has 24"),
        ("speaker-groups:2", "strict", "at least 3 speaker groups"),
        ("speaker-groups:1", "paper", "at least 2 folds"),
        ("speaker-groups:x", "paper", "not a whole number"),
        ("speaker-groups", "paper", "needs a number of folds"),
        ("holdout:1.5", "paper", "between 0 and 1"),
        ("holdout:abc", "paper", "not a fraction"),
        ("kfold:5", "paper", "unknown protocol"),
        ("speaker-groups:6", "loose", "unknown validation"),
    ],
)
def test_bad_protocols_are_user_errors(protocol: str, validation: str, match: str) -> None:
    with pytest.raises(SplitError, match=match):
        make_folds(ravdess_like(), protocol, validation=validation)


def test_speaker_groups_two_groups_work_with_paper_validation() -> None:
    corpus = ravdess_like()
    folds = make_folds(corpus, "speaker-groups:2", validation="paper")
    assert [len(f.speakers(corpus, "test")) for f in folds] == [12, 12]


def test_stratified_matches_scikit_learn_and_is_not_speaker_independent() -> None:
    corpus = ravdess_like()
    folds = make_folds(corpus, "stratified:5", validation="paper", seed=7)
    ids = [u.id for u in corpus]
    expected = StratifiedKFold(5, shuffle=True, random_state=7).split(ids, [u.label for u in corpus])
    for f, (_, test_idx) in zip(folds, expected, strict=True):
        assert set(f.test) == {ids[i] for i in test_idx}
        assert not f.speaker_independent
        assert f.valid == f.test
    assert folds == make_folds(corpus, "stratified:5", validation="paper", seed=7)
    assert [f.test for f in folds] != [f.test for f in make_folds(corpus, "stratified:5", validation="paper", seed=8)]


def test_stratified_strict_carves_a_stratified_tenth_of_training() -> None:
    labels = ("a", "b")
    speakers = [f"s{i}" for i in range(10)]
    corpus = make_corpus(speakers, per_speaker=20, labels=labels, label_of=lambda s, i: "a" if i < 15 else "b")
    folds = make_folds(corpus, "stratified:5", validation="strict", seed=3)
    for f in folds:
        assert not set(f.valid) & set(f.test) and not set(f.valid) & set(f.train)
        pool = len(f.train) + len(f.valid)
        assert len(f.valid) == pytest.approx(VALID_FRACTION * pool, abs=1)
        counts = Counter(corpus[i].label for i in f.valid)
        assert counts["a"] == 3 * counts["b"]  # 160 train+valid with 3:1 -> valid 12 a + 4 b


def test_holdout_matches_train_test_split() -> None:
    corpus = ravdess_like()
    folds = make_folds(corpus, "holdout:0.2", validation="paper", seed=5)
    assert len(folds) == 1
    f = folds[0]
    ids = [u.id for u in corpus]
    _, expected_test = train_test_split(ids, test_size=0.2, stratify=[u.label for u in corpus], random_state=5)
    assert set(f.test) == set(expected_test)
    assert len(f.test) == math.ceil(0.2 * len(corpus))  # scikit-learn rounds the test size up
    assert f.name == "holdout 20%" and not f.speaker_independent
    strict = make_folds(corpus, "holdout:0.2", validation="strict", seed=5)[0]
    assert strict.test == f.test
    assert set(strict.train) | set(strict.valid) == set(f.train)


def test_tiny_corpus_falls_back_to_unstratified_validation_and_reports_missing_classes() -> None:
    # "sad" has a single utterance: scikit-learn cannot stratify the strict carve-out.
    labels_of = {("s1", 0): "sad"}
    corpus = make_corpus(["s1", "s2", "s3"], per_speaker=4, label_of=lambda s, i: labels_of.get((s, i), "angry"))
    folds = make_folds(corpus, "holdout:0.3", validation="strict", seed=0)
    assert folds[0].valid
    by_speaker = make_folds(corpus, "speaker-groups:3", validation="paper")
    assert by_speaker[0].missing_train_classes(corpus) == ["happy", "neutral", "sad"]
    assert by_speaker[1].missing_train_classes(corpus) == ["happy", "neutral"]


def test_fold_check_catches_leaks() -> None:
    corpus = ravdess_like()
    good = make_folds(corpus, "speaker-groups:6", validation="strict")
    f = good[0]
    with pytest.raises(SplitError, match="both train and test"):
        replace(f, train=f.train + f.test[:1], test=f.test).check(corpus)
    with pytest.raises(SplitError, match="both valid and test"):
        replace(f, valid=f.valid + f.test[:1]).check(corpus)
    with pytest.raises(SplitError, match="do not cover"):
        replace(f, train=f.train[1:]).check(corpus)
    # move one utterance of a test speaker into training: utterance-disjoint but speaker leak
    moved = f.test[0]
    with pytest.raises(SplitError, match="appear in both train and test"):
        replace(f, train=f.train + (moved,), test=f.test[1:]).check(corpus)
    with pytest.raises(SplitError, match="exactly the test fold"):
        replace(f, validation="paper").check(corpus)
    with pytest.raises(SplitError, match="not in the corpus"):
        replace(f, test=f.test + ("nope",)).check(corpus)
    # the same utterance-level leak is allowed where no speaker independence is promised
    replace(f, train=f.train + (moved,), test=f.test[1:], speaker_independent=False).check(corpus)


def test_check_folds_requires_disjoint_tests_covering_the_corpus() -> None:
    corpus = ravdess_like()
    folds = make_folds(corpus, "speaker-groups:6", validation="paper")
    with pytest.raises(SplitError, match="tested in both fold 1 and fold 2"):
        check_folds([folds[0], replace(folds[0], index=2)], corpus)
    with pytest.raises(SplitError, match="never tested"):
        check_folds(folds[:-1], corpus)
    check_folds(folds, corpus)


def test_write_folds_writes_auditable_jsonl(tmp_path) -> None:
    corpus = iemocap_like()
    folds = make_folds(corpus, "leave-one-session-out", validation="strict")
    written = write_folds(folds, corpus, tmp_path / "out")
    assert len(written) == 5 * 3 + 1
    for f in folds:
        for part, ids in f.parts().items():
            lines = (tmp_path / "out" / f"fold_{f.index}" / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()
            records = [Utterance.from_dict(json.loads(line)) for line in lines]
            assert tuple(r.id for r in records) == ids
            assert records == [corpus[i] for i in ids]
    summary = json.loads((tmp_path / "out" / "folds.json").read_text())
    assert summary["fingerprint"] == corpus.fingerprint()
    assert [s["name"] for s in summary["folds"]] == [f.name for f in folds]
    assert summary["folds"][0]["speakers"]["test"] == ["Ses01F", "Ses01M"]
    assert summary["folds"][0]["sizes"] == {"train": 48, "valid": 16, "test": 16}
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_write_folds_replaces_an_earlier_split_with_more_folds(tmp_path) -> None:
    corpus = ravdess_like()
    write_folds(make_folds(corpus, "speaker-groups:6"), corpus, tmp_path)
    (tmp_path / "fold_6" / "notes.txt").write_text("mine")
    with pytest.raises(SplitError, match="fold_6 is left from an earlier split"):
        write_folds(make_folds(corpus, "speaker-groups:4"), corpus, tmp_path)
    (tmp_path / "fold_6" / "notes.txt").unlink()
    write_folds(make_folds(corpus, "speaker-groups:4"), corpus, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("fold_*")) == ["fold_1", "fold_2", "fold_3", "fold_4"]
    assert len(json.loads((tmp_path / "folds.json").read_text())["folds"]) == 4


def _fake_loader(corpus: Corpus):
    def load_corpus(spec: str) -> Corpus:
        assert spec == "toy:/nowhere"
        return corpus

    return load_corpus


def test_cli_splits_writes_folds(tmp_path, monkeypatch) -> None:
    import emovox.corpora
    from emovox.cli import app

    monkeypatch.setattr(emovox.corpora, "load_corpus", _fake_loader(ravdess_like()), raising=False)
    out = tmp_path / "folds"
    result = CliRunner().invoke(
        app, ["splits", "toy:/nowhere", "--protocol", "holdout:0.25", "--out", str(out), "--validation", "paper", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "NOT speaker-independent" in result.output
    test_ids = [json.loads(line)["id"] for line in (out / "fold_1" / "test.jsonl").read_text().splitlines()]
    assert len(test_ids) == 24
    assert (out / "fold_1" / "valid.jsonl").read_text() == (out / "fold_1" / "test.jsonl").read_text()


def test_cli_splits_reports_user_errors(tmp_path, monkeypatch) -> None:
    import emovox.corpora
    from emovox.cli import app

    monkeypatch.setattr(emovox.corpora, "load_corpus", _fake_loader(ravdess_like()), raising=False)
    result = CliRunner().invoke(app, ["splits", "toy:/nowhere", "--protocol", "speaker-groups:30", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, SplitError)
    assert "30 speaker groups" in str(result.exception)


def test_emodb_leave_one_speaker_out(emodb_dir, tmp_path) -> None:
    from emovox.cli import app

    result = CliRunner().invoke(
        app, ["splits", f"emodb:{emodb_dir}", "--protocol", "leave-one-speaker-out", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "folds.json").read_text())
    assert len(summary["folds"]) == 10
    test_speakers = [s["speakers"]["test"] for s in summary["folds"]]
    assert all(len(t) == 1 for t in test_speakers) and len({t[0] for t in test_speakers}) == 10
    assert sum(s["sizes"]["test"] for s in summary["folds"]) == 535

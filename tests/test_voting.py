"""Voting: known answers (ties included), choices that never read test labels, refused mismatches, the output run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import make_run, onehot
from typer.testing import CliRunner

from emovox.cli import app
from emovox.evaluation.predictions import PredictionsError, load_predictions, load_run
from emovox.evaluation.stats import compare_runs
from emovox.evaluation.vote_report import write_vote
from emovox.evaluation.voting import VoteError, hard_vote, soft_vote, vote_runs, weight_grid

L = ("angry", "happy", "neutral", "sad")
A, H, N, S = range(4)
runner = CliRunner()


# --- combining one set of predictions -------------------------------------------------------


def test_hard_vote_majority_and_tie_rule() -> None:
    # utterances (columns): 0 clear majority; 1 two-two tie decided by summed probabilities;
    # 2 two-two tie with equal sums -> the first member's label among the tied ones;
    # 3 three-way tie of single votes, sums equal -> the first member's label;
    # 4 tie between H and N while the first member voted A (not tied) -> the second member's label (N)
    preds = np.array([
        [A, A, H, S, A],
        [A, H, N, N, N],
        [H, A, H, A, H],
        [S, H, N, S, N],
    ])  # fmt: skip
    probs = np.full((4, 5, 4), 0.25)
    probs[:, 1] = [[0.4, 0.6, 0, 0], [0.1, 0.9, 0, 0], [0.6, 0.4, 0, 0], [0.2, 0.8, 0, 0]]  # A: 1.3, H: 2.7
    pred, shares = hard_vote(preds, probs)
    assert pred.tolist() == [A, H, H, S, N]
    np.testing.assert_allclose(shares[0], [0.5, 0.25, 0, 0.25])
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    # column 2 without the sums tie: N gets more probability -> N, not the first member's H
    probs[:, 2] = [[0, 0.4, 0.6, 0], [0, 0.4, 0.6, 0], [0, 0.4, 0.6, 0], [0, 0.4, 0.6, 0]]
    assert hard_vote(preds, probs)[0][2] == N
    # sums that differ only by float rounding (0.1 + 0.2 vs 0.3) count as a tie
    p3 = np.zeros((2, 1, 4))
    p3[0, 0] = [0.1, 0.3, 0, 0]
    p3[1, 0] = [0.2, 0.0, 0, 0]
    assert hard_vote(np.array([[H], [A]]), p3)[0].tolist() == [H]  # first member's label
    assert hard_vote(np.array([[A], [H]]), p3)[0].tolist() == [A]


def test_soft_and_weighted_vote() -> None:
    probs = np.array([[[0.6, 0.4]], [[0.3, 0.7]], [[0.55, 0.45]]])
    pred, mean = soft_vote(probs)
    np.testing.assert_allclose(mean, [[1.45 / 3, 1.55 / 3]])
    assert pred.tolist() == [1]
    pred, mean = soft_vote(probs, [0.8, 0.1, 0.1])
    np.testing.assert_allclose(mean, [[0.565, 0.435]])
    assert pred.tolist() == [0]
    assert soft_vote(np.array([[[0.5, 0.5]]]))[0].tolist() == [0]  # exact tie: first label


def test_weight_grid() -> None:
    grid = list(weight_grid(3, 10))
    assert grid[0] == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert len(grid) == math.comb(12, 2) + 1  # the grid plus the equal weights, which are not on it
    assert all(sum(w) == pytest.approx(1.0) and min(w) >= 0 for w in grid)
    assert len(set(grid)) == len(grid) and (1.0, 0.0, 0.0) in grid and (0.2, 0.3, 0.5) in grid
    two = list(weight_grid(2, 4))
    assert two[0] == (0.5, 0.5) and len(two) == 5  # the equal weights are on this grid: not repeated


# --- hand-made runs ---------------------------------------------------------------------------


def rows(prefix: str, truth: list[str], guesses: list[str], speakers: str = "s") -> list:
    return [(f"{prefix}{i}", f"{speakers}{i % 3}", t, onehot(L, g)) for i, (t, g) in enumerate(zip(truth, guesses, strict=True))]


def test_vote_of_three_runs_known_answer_and_output_run(tmp_path: Path) -> None:
    truth = ["angry", "happy", "neutral", "sad"]
    fold_1 = [["angry", "happy", "sad", "happy"], ["angry", "sad", "neutral", "angry"], ["happy", "happy", "neutral", "neutral"]]
    runs = [
        make_run(tmp_path / f"r{m + 1}", L, {1: {"test": rows("u", truth, guesses)}, 2: {"test": rows("v", truth, truth)}})
        for m, guesses in enumerate(fold_1)
    ]
    vote = vote_runs(runs)
    # u0: A,A,H -> A; u1: H,S,H -> H; u2: S,N,N -> N; u3: H,A,N three-way tie, equal sums -> r1's H
    assert vote.folds[0].test.pred.tolist() == [A, H, N, H]
    assert vote.folds[1].test.pred.tolist() == [A, H, N, S]
    assert vote.result.pooled.wa == pytest.approx(7 / 8)
    assert [s["wa"] for s in vote.member_scores] == pytest.approx([6 / 8, 6 / 8, 6 / 8])
    assert not vote.optimistic and vote.folds[0].candidates == []  # nothing chosen, no validation needed

    out = tmp_path / "vote"
    payload = write_vote(vote, out, n_boot=50)
    assert payload["vote"]["method"] == "hard" and payload["vote"]["optimistic"] is False
    assert payload["pooled"]["wa"] == pytest.approx(7 / 8) and "weighted_f1" in payload["pooled"]
    assert payload["confidence_intervals"]["speaker"]["n_units"] == 3  # speaker-independent members: speakers too
    # the output is a run directory like any other: readable, comparable, votable again
    again = load_run(out)
    assert again.labels == L and again.speaker_independent is True
    table = again.predictions()
    assert table.pred.tolist() == [A, H, N, H, A, H, N, S]
    np.testing.assert_allclose(table.probs[3], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-6)  # vote shares
    assert compare_runs(out, runs[0], n_boot=50)["verdict"] in ("A better", "no difference beyond noise")
    report = (out / "report.md").read_text()
    assert "## Vote" in report and "## Confidence intervals" in report and "OPTIMISTIC" not in report
    assert vote_runs([out, *runs[:2]]).folds[0].test.pred.tolist() == [A, H, N, H]


def test_soft_vote_of_runs(tmp_path: Path) -> None:
    # two members lean angry a little, the third is sure of happy: hard says angry, soft happy
    lean, sure = [0.51, 0.49, 0, 0], [0.0, 1.0, 0, 0]
    runs = [make_run(tmp_path / f"r{m}", L, {1: {"test": [("u0", "s", "happy", p)]}}) for m, p in enumerate([lean, lean, sure])]
    soft = vote_runs(runs, method="soft")
    assert soft.folds[0].test.pred.tolist() == [H]
    np.testing.assert_allclose(soft.folds[0].test.probs, [[0.34, 0.66, 0, 0]])
    assert vote_runs(runs, method="hard").folds[0].test.pred.tolist() == [A]


def selection_runs(root: Path, *, poison_test: bool = False) -> list[Path]:
    """Four runs, two folds of 24 validation and 24 test utterances.

    On validation r0 errs once and r1 twice, r2/r3 on most utterances; on test it is the reverse
    (r2 errs once, r3 twice, r0/r1 on most). With ``poison_test`` the test truth of every run is
    replaced by r0's test guesses, which makes r0 perfect to anything that reads test labels.
    """
    n = 24
    truth = [L[(5 * i + i // 4) % 4] for i in range(n)]
    wrong = {  # member -> (wrong positions on validation, on test)
        0: ({0}, set(range(16))),
        1: ({1, 2}, set(range(2, 18))),
        2: (set(range(16)), {0}),
        3: (set(range(2, 18)), {1, 3}),
    }

    def guesses(m: int, part: str) -> list[str]:
        bad = wrong[m][part == "test"]
        return [L[(L.index(t) + 1 + m % 2) % 4] if i in bad else t for i, t in enumerate(truth)]

    paths = []
    for m in wrong:
        folds = {}
        for k in (1, 2):
            folds[k] = {}
            for part in ("valid", "test"):
                t = guesses(0, "test") if poison_test and part == "test" else truth
                folds[k][part] = rows(f"{part}{k}_", t, guesses(m, part))
        paths.append(make_run(root / f"r{m}", L, folds))
    return paths


@pytest.mark.parametrize("method", ["hard", "soft", "weighted"])
def test_choices_never_read_test_labels(tmp_path: Path, method: str) -> None:
    clean = vote_runs(selection_runs(tmp_path / "clean"), method=method, k=2, grid=4)
    poisoned = vote_runs(selection_runs(tmp_path / "poisoned", poison_test=True), method=method, k=2, grid=4)
    for c, p in zip(clean.folds, poisoned.folds, strict=True):
        assert c.chosen.members == (0, 1)  # best on validation
        assert (c.chosen.members, c.chosen.weights, c.chosen.score) == (p.chosen.members, p.chosen.weights, p.chosen.score)
        assert c.candidates == p.candidates
        np.testing.assert_array_equal(c.test.pred, p.test.pred)
        np.testing.assert_array_equal(c.test.probs, p.test.probs)
        assert not np.array_equal(c.test.true, p.test.true)  # the poison is real
    assert not clean.optimistic

    # the paper's way reads the test labels: it picks the test-best pair, and the poison moves it
    def voting(f) -> set[int]:  # members with a say (a zero weight silences one)
        return {m for i, m in enumerate(f.chosen.members) if f.chosen.weights is None or f.chosen.weights[i] > 0}

    on_test = vote_runs(selection_runs(tmp_path / "clean"), method=method, k=2, grid=4, choose_on="test")
    poisoned_runs = selection_runs(tmp_path / "poisoned", poison_test=True)
    on_poisoned_test = vote_runs(poisoned_runs, method=method, k=2, grid=4, choose_on="test")
    assert on_test.optimistic and all(voting(f) <= {2, 3} for f in on_test.folds)
    assert all(0 in voting(f) for f in on_poisoned_test.folds)
    assert on_test.result.pooled.ua > clean.result.pooled.ua


def test_k1_chooses_the_best_single_run_on_validation_and_weighted_output(tmp_path: Path) -> None:
    runs = selection_runs(tmp_path)
    best_single = vote_runs(runs, k=1)
    assert all(f.chosen.members == (0,) for f in best_single.folds)
    weighted = vote_runs(runs, method="weighted", grid=4)
    assert all(f.chosen.weights is not None and sum(f.chosen.weights) == pytest.approx(1.0) for f in weighted.folds)
    payload = write_vote(weighted, tmp_path / "w", n_boot=20)
    assert payload["vote"]["folds"][0]["weights"] == list(weighted.folds[0].chosen.weights)
    # the validation predictions of the vote are written too (so a vote can be chosen on again)
    valid = load_predictions(tmp_path / "w" / "fold_1" / "valid_predictions.csv", L)
    assert len(valid) == 24
    candidates = (tmp_path / "w" / "candidates.csv").read_text().splitlines()
    assert candidates[0] == "fold,members,weights,ua_on_valid,chosen"
    assert len(candidates) == 1 + 2 * len(list(weight_grid(4, 4)))  # two folds, one subset (all four), the grid
    assert sum(line.endswith(",True") for line in candidates) == 2


def test_log_loss_tells_apart_what_a_saturated_validation_ua_cannot(tmp_path: Path) -> None:
    """Every member is right on every validation utterance; only their confidence differs. UA ties
    (the first subset wins), the log-loss picks the two most confident members."""
    truth = ["angry", "happy", "neutral", "sad"] * 3
    confidence = [0.4, 0.55, 0.9, 0.8]  # probability each member gives the true class (the rest spread evenly)

    def soft_rows(prefix: str, p: float) -> list:
        out = []
        for i, t in enumerate(truth):
            probs = [(1 - p) / 3] * 4
            probs[L.index(t)] = p
            out.append((f"{prefix}{i}", f"s{i % 3}", t, probs))
        return out

    runs = [make_run(tmp_path / f"r{m}", L, {1: {"valid": soft_rows("v", p), "test": soft_rows("t", p)}})
            for m, p in enumerate(confidence)]
    by_ua = vote_runs(runs, method="soft", k=2)
    by_loss = vote_runs(runs, method="soft", k=2, metric="log_loss")
    assert by_ua.folds[0].chosen.members == (0, 1)  # all six pairs score 100 %: the tie rule decides
    assert by_loss.folds[0].chosen.members == (2, 3)
    expected = -np.log((0.9 + 0.8) / 2)
    assert by_loss.folds[0].chosen.score == pytest.approx(-expected)
    payload = write_vote(by_loss, tmp_path / "out", n_boot=20)
    assert payload["vote"]["select_metric"] == "log_loss"
    assert "log-loss" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(VoteError, match="log_loss"):
        vote_runs(runs, k=2, metric="brier")


def test_choose_on_test_and_paper_validation_are_labelled_optimistic(tmp_path: Path) -> None:
    runs = selection_runs(tmp_path)
    out = tmp_path / "opt"
    args = ["vote", *map(str, runs), "--k", "3", "--choose-on", "test", "--out", str(out), "--n-boot", "20", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "OPTIMISTIC" in result.output and "OPTIMISTIC" in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["vote"]["optimistic"] is True
    # runs whose validation part is their test part ("paper" validation) are optimistic even on valid
    t = ["angry", "happy", "sad"]
    paper = [
        make_run(tmp_path / f"p{m}", L, {1: {"test": rows("u", t, g), "valid": rows("u", t, g)}})
        for m, g in enumerate([t, ["happy"] * 3, ["sad"] * 3])
    ]
    assert vote_runs(paper, k=2).optimistic


def test_mismatched_runs_are_refused(tmp_path: Path) -> None:
    t = ["angry", "happy"]
    base = make_run(tmp_path / "base", L, {1: {"test": rows("u", t, t)}, 2: {"test": rows("v", t, t)}})
    one_fold = make_run(tmp_path / "one", L, {1: {"test": rows("u", t, t)}})
    with pytest.raises(VoteError, match=r"has folds \[1\] but .*base has \[1, 2\]"):
        vote_runs([base, one_fold])
    other_ids = make_run(tmp_path / "ids", L, {1: {"test": rows("x", t, t)}, 2: {"test": rows("v", t, t)}})
    with pytest.raises(
        VoteError, match=r"fold 1: the test utterances of .*ids differ .*2 only in the first \(e.g. \['u0', 'u1'\]"
    ):
        vote_runs([base, other_ids])
    other_truth = make_run(tmp_path / "truth", L, {1: {"test": rows("u", ["angry", "sad"], t)}, 2: {"test": rows("v", t, t)}})
    with pytest.raises(VoteError, match="utterance 'u1' is 'happy' in .*base but 'sad' in .*truth"):
        vote_runs([base, other_truth])
    other_labels = make_run(tmp_path / "labels", ("angry", "happy", "neutral", "calm"), {1: {"test": rows("u", t, t)}})
    with pytest.raises(VoteError, match="disagree on the label set"):
        vote_runs([base, other_labels])
    twin = make_run(tmp_path / "twin", L, {1: {"test": rows("u", t, t)}, 2: {"test": rows("v", t, t)}})
    assert vote_runs([base, twin]).result.pooled.wa == 1.0  # nothing to choose: no validation predictions needed
    with pytest.raises(PredictionsError, match="valid_predictions.csv: missing"):
        vote_runs([base, twin], k=1)
    with pytest.raises(VoteError, match="given twice"):
        vote_runs([base, base])
    with pytest.raises(VoteError, match="at least two runs"):
        vote_runs([base])
    with pytest.raises(VoteError, match="--k 3"):
        vote_runs([base, one_fold], k=3)
    shutil.rmtree(one_fold / "fold_1")
    (one_fold / "results.json").unlink()
    result = runner.invoke(app, ["vote", str(base), str(one_fold)])
    assert result.exit_code != 0 and "no results.json" in str(result.exception)


def test_a_run_refitted_on_its_validation_speakers_without_held_out_predictions_cannot_choose(tmp_path):
    """Validation predictions of a head refitted on them (written by emovox before they were held
    out) are in-sample: choosing members by them is refused, naming the run; voting without a
    choice still works, and a run whose choices carry the held-out mark is accepted."""
    from emovox.evaluation.voting import VoteError, vote_runs
    from emovox.models.closed_form import VALID_HELD_OUT

    L = ["a", "b"]
    rows = {1: {"valid": [("v1", "s1", "a", onehot(L, "a"))], "test": [("t1", "s2", "b", onehot(L, "b"))]}}
    runs = [make_run(tmp_path / f"r{m}", L, rows) for m in range(3)]
    record = json.loads((runs[0] / "results.json").read_text())
    (runs[0] / "results.json").write_text(json.dumps({**record, "choices": [{"C": 0.1, "refit": True}]}))
    with pytest.raises(VoteError, match=r"r0: its head was refitted on the validation speakers"):
        vote_runs(runs, method="soft", k=2)
    assert vote_runs(runs, method="soft").result.pooled.n == 1  # no choice, nothing read from validation
    (runs[0] / "results.json").write_text(
        json.dumps({**record, "choices": [{"C": 0.1, "refit": True, "valid_predictions": VALID_HELD_OUT}]})
    )
    assert vote_runs(runs, method="soft", k=2).result.pooled.n == 1

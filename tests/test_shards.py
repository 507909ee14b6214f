"""Deterministic shards: `emovox extract --shard i/n` and `emovox predict --shard i/n --out` + `emovox merge`.

The union of the shards equals the unsharded output exactly (every cached tensor, every predicted
probability), shards are disjoint, and more shards than inputs work (the extra ones are empty).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import make_tone_manifest, tiny_config, write_manifest
from typer.testing import CliRunner

from emovox.cli import app
from emovox.data.shards import Shard
from emovox.errors import ConfigError, EmovoxError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def invoke(*args: str):
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r


@pytest.mark.parametrize("total,chunk,n", [(25, 4, 3), (7, 3, 1), (5, 2, 9), (0, 4, 2), (64, 64, 2)])
def test_shards_are_disjoint_and_cover_every_input(total, chunk, n):
    parts = [Shard(i, n).select(list(range(total)), chunk) for i in range(1, n + 1)]
    positions = [p for part in parts for p, _ in part]
    assert sorted(positions) == list(range(total))  # every input once: disjoint and complete
    for part in parts:  # whole chunks only, so each input is batched with the same neighbours as unsharded
        assert all(p // chunk == q // chunk or q % chunk == 0 for (p, _), (q, _) in zip(part, part[1:], strict=False))


def test_shard_parse_is_one_based_and_checked():
    assert Shard.parse("2/8") == Shard(2, 8) and str(Shard.parse(" 8 / 8 ")) == "8/8" and Shard.parse(None) == Shard(1, 1)
    for bad in ("0/4", "5/4", "1", "a/b", "-1/3"):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)


def cache_entries(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {str(p.relative_to(root)): load_file(str(p)) for p in sorted(root.rglob("*.safetensors"))}


def test_extract_shards_fill_exactly_the_cache_one_unsharded_extraction_fills(tmp_path):
    manifest = make_tone_manifest(tmp_path / "corpus", speakers=4, per_class=3)  # 24 utterances, 3 lengths
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(manifest, tmp_path / "unused", baseline=True)))
    whole = tmp_path / "whole"
    r = invoke("extract", str(config), "--set", f"cache_dir={whole}", "--chunk", "5", "--quiet")
    # 24 clips and one length-augmented training copy of each (train.augment's default); the baseline reads
    # the same frozen layers of the clips as this probe: its 24 entries are the recipe's, read back
    assert "24 utterances in 5 chunk(s); 48 feature entries computed, 24 already cached" in r.output
    expected = cache_entries(whole)
    assert len(expected) == 48
    union: dict[str, dict[str, torch.Tensor]] = {}
    for i in (1, 2, 3):
        part = tmp_path / f"part{i}"
        invoke("extract", str(config), "--set", f"cache_dir={part}", "--chunk", "5", "--shard", f"{i}/3", "--quiet")
        entries = cache_entries(part)
        assert entries and not set(entries) & set(union)  # disjoint
        union.update(entries)
    assert set(union) == set(expected)
    for key, tensors in expected.items():
        assert set(tensors) == set(union[key]) and all(torch.equal(tensors[k], union[key][k]) for k in tensors), key
    # more shards than chunks: the extra shards are empty and succeed
    r = invoke("extract", str(config), "--set", f"cache_dir={tmp_path / 'empty'}", "--chunk", "5", "--shard", "40/40", "--quiet")
    assert "0 utterances in 0 chunk(s)" in r.output and not list((tmp_path / "empty").rglob("*.safetensors"))
    # a shard run again reads what is cached and computes nothing
    r = invoke("extract", str(config), "--set", f"cache_dir={whole}", "--chunk", "5", "--shard", "2/3", "--quiet")
    assert "0 feature entries computed" in r.output
    # and so does the run itself: extraction cached everything its folds and baseline read
    invoke("cv", str(config), "--set", f"cache_dir={whole}", "--out", str(tmp_path / "run"), "--quiet")
    assert cache_entries(whole).keys() == expected.keys()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """25 inputs: 24 tone clips with ids, and one file that is not audio (an error row)."""
    import csv

    root = tmp_path_factory.mktemp("predict-inputs")
    manifest = make_tone_manifest(root, speakers=4, per_class=3)
    with manifest.open() as fh:
        rows = [dict(r, id=f"utt{i:02d}") for i, r in enumerate(csv.DictReader(fh))]
    (root / "wav" / "broken.wav").write_text("not audio")
    rows.insert(7, {"id": "broken", "path": "wav/broken.wav", "label": "low", "text": "x"})
    return write_manifest(root / "inputs.csv", rows, ("id", "path", "label", "text"))


def predict_part(model: Path, inputs: Path, out: Path, *extra: str):
    """A part written with the plain path's exit status: 0, or 3 (and the failure named on stderr)
    when the part holds the one unreadable input ("broken")."""
    args = ["predict", str(model), str(inputs), "--batch-size", "2", "--on-bad-audio", "skip", "--out", str(out), "--quiet", *extra]
    r = CliRunner().invoke(app, args)
    broken = "broken" in pq.read_table(out).column("id").to_pylist()
    assert r.exit_code == (3 if broken else 0), (args, r.output, r.exception)
    assert ("could not be predicted" in r.output) == broken and (not broken or "broken" in r.output)
    return r


def plain(t):
    return t.replace_schema_metadata(None)


def test_predict_shards_merge_to_the_unsharded_output_exactly(audio_recognizer_dir, inputs, tmp_path):
    whole = tmp_path / "all.parquet"
    predict_part(audio_recognizer_dir, inputs, whole)
    expected = pq.read_table(whole)
    assert expected.num_rows == 25 and expected.column("index").to_pylist() == list(range(25))
    assert expected.column("id").to_pylist()[7] == "broken"
    assert expected.column("error")[7].as_py() and expected.column("label")[7].as_py() is None
    # the same numbers as the JSON the plain path writes
    r = CliRunner().invoke(
        app, ["predict", str(audio_recognizer_dir), str(inputs), "--batch-size", "2", "--json", str(tmp_path / "a.json")]
    )
    assert r.exit_code == 3, r.output  # the plain path writes every good row and signals the unreadable one
    rows = json.loads((tmp_path / "a.json").read_text())
    by_id = {r["input"]: r for r in rows}
    for uid, p_high in zip(expected.column("id").to_pylist(), expected.column("p_high").to_pylist(), strict=True):
        assert p_high == (by_id[uid].get("probabilities") or {}).get("high")
    parts = []
    for i in (1, 2, 3):
        part = tmp_path / f"part-{i}.parquet"
        r = predict_part(audio_recognizer_dir, inputs, part, "--shard", f"{i}/3")
        assert f"shard {i}/3:" in r.output
        parts.append(part)
    indices = [set(pq.read_table(p).column("index").to_pylist()) for p in parts]
    assert all(not (a & b) for k, a in enumerate(indices) for b in indices[k + 1 :])  # disjoint
    invoke("merge", *map(str, reversed(parts)), "--out", str(tmp_path / "merged.parquet"))
    merged = pq.read_table(tmp_path / "merged.parquet")
    assert plain(merged).equals(plain(expected))  # exactly: every id, label and probability
    # merge refuses an incomplete or doubled set of parts, naming the problem
    r = CliRunner().invoke(app, ["merge", str(parts[0]), str(parts[2]), "--out", str(tmp_path / "x.parquet")])
    assert isinstance(r.exception, EmovoxError) and "shard(s) 2/3 missing" in str(r.exception)
    r = CliRunner().invoke(app, ["merge", *map(str, parts), str(parts[1]), "--out", str(tmp_path / "x.parquet")])
    assert isinstance(r.exception, EmovoxError) and "given twice" in str(r.exception)
    r = CliRunner().invoke(app, ["merge", str(parts[0]), str(whole), "--out", str(tmp_path / "x.parquet")])
    assert isinstance(r.exception, EmovoxError) and "shard" in str(r.exception)


def test_more_shards_than_inputs(audio_recognizer_dir, inputs, tmp_path):
    from emovox.cli.parts import merge_parts

    n = 40  # 25 inputs in chunks of 8: shards 5..40 hold nothing
    parts = []
    for i in range(1, n + 1):
        part = tmp_path / f"p{i}.parquet"
        if i in (1, 4, 5, 40):  # the CLI on a few, including empty ones
            predict_part(audio_recognizer_dir, inputs, part, "--shard", f"{i}/{n}")
        else:
            _predict_direct(audio_recognizer_dir, inputs, part, Shard(i, n))
        parts.append(part)
    assert pq.read_table(parts[-1]).num_rows == 0
    merged = merge_parts(parts)
    predict_part(audio_recognizer_dir, inputs, tmp_path / "all.parquet")
    assert plain(merged).equals(plain(pq.read_table(tmp_path / "all.parquet")))


def _predict_direct(model: Path, inputs: Path, out: Path, shard: Shard):
    from emovox.cli.engine import open_recognizer
    from emovox.cli.inputs import Job, expand_inputs
    from emovox.cli.parts import predict_parts
    from emovox.cli.predict import run_predictions

    rec = open_recognizer(model)
    predict_parts(
        rec, model, expand_inputs([inputs]), shard=shard, out=out, batch_size=2, on_bad_audio="skip", progress=False,
        rows_of=run_predictions, job_type=Job,
    )  # fmt: skip


def test_predict_on_ray_equals_the_plain_path(audio_recognizer_dir, inputs, tmp_path):
    ray = pytest.importorskip("ray")
    predict_part(audio_recognizer_dir, inputs, tmp_path / "plain.parquet")
    try:
        # two CPUs and one actor of one CPU: the other CPU stays free for Ray Data's own tasks
        predict_part(audio_recognizer_dir, inputs, tmp_path / "ray.parquet", "--ray", "--ray-cpus", "2", "--ray-actors", "1")
    finally:
        ray.shutdown()
    got = pq.read_table(tmp_path / "ray.parquet")
    assert got.column("id").to_pylist()[7] == "broken"
    assert plain(got).equals(plain(pq.read_table(tmp_path / "plain.parquet")))

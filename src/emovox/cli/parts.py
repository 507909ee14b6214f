"""Predictions as parquet parts: ``emovox predict ... --shard i/n --out part-i.parquet``, ``--ray``, and ``emovox merge``.

Every row carries the input's id (the manifest ``id``, else its path) and its position in the
whole input list (``index``), so parts from any number of machines merge back by id into the
order of one unsharded run. Each file records in its parquet metadata which shard it is, of how
many, and fingerprints of the model and of the whole input list: ``merge`` refuses parts of
different runs, names missing shards and overlapping rows, and checks that every input is there
exactly once. Sharding is by chunk (``emovox.data.shards``), the chunk being the unit the plain
path batches together, so the merged parts equal the unsharded output exactly.

``--ray`` runs the same chunks on Ray Data (the ``ray`` extra): ``map_batches`` over an actor pool,
each actor loading the recognizer once; rows carry their ids and come back sorted by index, equal
to the plain path. On a small machine keep a CPU free for Ray's own tasks: with ``num_cpus=2``,
one actor of one CPU (two actors taking both CPUs leave the reader none, and the pipeline stalls).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import typer

from emovox.cli import app
from emovox.data.shards import Shard
from emovox.errors import EmovoxError

#: Parquet metadata key holding the part's record.
META_KEY = b"emovox"
#: Columns after ``index``, ``id``, ``label`` and the probabilities, always present (null where they do not apply).
EXTRA_COLUMNS = ("transcript", "reference", "seconds", "seconds_used", "error")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EmovoxError("parquet output needs pyarrow: pip install 'emovox[cluster]'") from None
    return pa, pq


def inputs_fingerprint(jobs: Sequence) -> str:
    """sha256 of the whole input list (names, files, cuts, transcripts): parts of one run share it."""
    h = hashlib.sha256()
    for j in jobs:
        h.update(json.dumps([j.name, str(j.path) if j.path else None, j.start, j.end, j.text, j.context]).encode())
    return h.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    record = Path(model_dir) / "emovox.json"
    return hashlib.sha256(record.read_bytes()).hexdigest() if record.is_file() else str(model_dir)


def predict_chunk(
    rows_of: Callable, rec, jobs: Sequence, indices: Sequence[int], *, batch_size: int, on_bad_audio: str
) -> list[dict]:
    """Rows of one chunk (the plain path's batching unit), each with its ``index`` in the whole input list.

    ``rows_of`` is ``emovox.cli.predict.run_predictions`` (passed in: this module sits below ``predict``)."""
    free = {}  # name -> positions of this chunk not yet matched, in order (error rows may come first)
    for pos, job in enumerate(jobs):
        free.setdefault(job.name, []).append(pos)
    rows = []
    for row in rows_of(rec, list(jobs), batch_size=batch_size, progress=False, on_bad_audio=on_bad_audio):
        pos = free[row["input"]].pop(0)
        rows.append({"index": int(indices[pos]), **row})
    return rows


def chunk_size(batch_size: int) -> int:
    """The plain path predicts ``4 * batch_size`` clips at a time (``run_predictions``): that chunk is the shard unit."""
    return max(1, batch_size) * 4


def table(rows: list[dict], labels: Sequence[str], meta: dict):
    """One parquet table: index, id, label, p_<label>..., then ``EXTRA_COLUMNS``; rows sorted by index."""
    pa, _ = _pyarrow()
    rows = sorted(rows, key=lambda r: r["index"])
    probs = [r.get("probabilities") or {} for r in rows]
    columns = {
        "index": pa.array([r["index"] for r in rows], pa.int64()),
        "id": pa.array([str(r["input"]) for r in rows], pa.string()),
        "label": pa.array([r.get("label") for r in rows], pa.string()),
        **{f"p_{label}": pa.array([p.get(label) for p in probs], pa.float64()) for label in labels},
        "transcript": pa.array([r.get("transcript") for r in rows], pa.string()),
        "reference": pa.array([r.get("reference") for r in rows], pa.string()),
        "seconds": pa.array([r.get("seconds") for r in rows], pa.float64()),
        "seconds_used": pa.array([r.get("seconds_used") for r in rows], pa.float64()),
        "error": pa.array([r.get("error") for r in rows], pa.string()),
    }
    return pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def write_table(t, out: Path) -> None:
    """Atomically (temporary file, then rename), so a killed job never leaves a part that merge would trust."""
    import os
    import tempfile

    _, pq = _pyarrow()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(t, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def predict_parts(
    rec, model_dir: Path, jobs: Sequence, *, shard: Shard, out: Path, batch_size: int, on_bad_audio: str, progress: bool,
    rows_of: Callable, job_type: type, ray: bool = False, ray_address: str | None = None, ray_actors: int = 1,
    ray_cpus: int | None = None, engine: str = "torch",
) -> list[dict]:  # fmt: skip
    """Predict this shard's chunks (here, or on Ray) and write them to ``out``; returns the rows.

    ``rows_of`` and ``job_type`` are ``emovox.cli.predict``'s ``run_predictions`` and ``Job``, the plain path's own."""
    from tqdm.auto import tqdm

    chunk = chunk_size(batch_size)
    ranges = shard.chunks(len(jobs), chunk)
    meta = {
        "shard": str(shard), "inputs": len(jobs), "inputs_sha256": inputs_fingerprint(jobs), "chunk": chunk,
        "model": str(model_dir), "model_sha256": model_fingerprint(model_dir), "labels": list(rec.labels),
        "rows": sum(len(r) for r in ranges),
    }  # fmt: skip
    if ray:
        rows = predict_on_ray(
            model_dir, rec, jobs, ranges, batch_size=batch_size, on_bad_audio=on_bad_audio,
            address=ray_address, actors=ray_actors, cpus=ray_cpus, rows_of=rows_of, job_type=job_type, engine=engine,
        )  # fmt: skip
    else:
        rows = []
        with tqdm(total=meta["rows"], desc=f"predict {shard}", unit="file", disable=not progress) as bar:
            for r in ranges:
                part = [jobs[i] for i in r]
                rows += predict_chunk(rows_of, rec, part, list(r), batch_size=batch_size, on_bad_audio=on_bad_audio)
                bar.update(len(r))
    write_table(table(rows, rec.labels, meta), out)
    return rows


# --- Ray Data -------------------------------------------------------------------------------------


class RayPredictor:
    """A Ray Data actor: loads the recognizer once, then predicts one chunk per call, rows keyed by index and id."""

    def __init__(self, model_dir: str, asr, batch_size: int, on_bad_audio: str, rows_of: Callable, job_type: type,
                 engine: str = "torch"):
        if engine == "torch":
            from emovox.inference.recognizer import Recognizer

            self.rec = Recognizer.load(Path(model_dir), asr=asr)
        else:  # the engine the driver chose: every actor runs what a plain `predict` would have run
            from emovox.inference.runtime import Runtime

            self.rec = Runtime.load(Path(model_dir), int8=engine == "onnx-int8")
        self.batch_size, self.on_bad_audio = batch_size, on_bad_audio
        self.rows_of, self.job_type = rows_of, job_type

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        Job = self.job_type
        out_index, out_id, out_row = [], [], []
        for spec in batch["chunk"]:  # one chunk per call (batch_size=1): the plain path's batching unit
            items = json.loads(spec)
            jobs = [
                Job(x["name"], Path(x["path"]) if x["path"] else None, x["start"], x["end"], x["text"], x["reference"],
                    x.get("context"))
                for x in items
            ]
            indices = [x["index"] for x in items]
            rows = predict_chunk(
                self.rows_of, self.rec, jobs, indices, batch_size=self.batch_size, on_bad_audio=self.on_bad_audio
            )
            for row in rows:
                out_index.append(row["index"])
                out_id.append(str(row["input"]))
                out_row.append(json.dumps(row))  # one JSON cell: optional fields never change the block schema
        return {
            "index": np.asarray(out_index, dtype=np.int64),
            "id": np.asarray(out_id, dtype=object),
            "row": np.asarray(out_row, dtype=object),
        }


def predict_on_ray(
    model_dir: Path, rec, jobs: Sequence, ranges: list[range], *, batch_size: int, on_bad_audio: str,
    address: str | None, actors: int, cpus: int | None, rows_of: Callable, job_type: type, engine: str = "torch",
) -> list[dict]:  # fmt: skip
    try:
        import ray
    except ImportError:
        raise EmovoxError("--ray needs Ray Data: pip install 'emovox[ray]'") from None
    if not ranges:
        return []
    if not ray.is_initialized():
        init = {"address": address} if address else {"num_cpus": cpus}
        ray.init(**init, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    items = [
        {"chunk": json.dumps([
            {"index": i, "name": jobs[i].name, "path": str(jobs[i].path) if jobs[i].path else None, "start": jobs[i].start,
             "end": jobs[i].end, "text": jobs[i].text, "reference": jobs[i].reference, "context": jobs[i].context}
            for i in r
        ])}
        for r in ranges
    ]  # fmt: skip
    ds = ray.data.from_items(items).map_batches(
        RayPredictor,
        fn_constructor_kwargs={
            "model_dir": str(Path(model_dir).resolve()), "asr": rec.asr, "batch_size": batch_size,
            "on_bad_audio": on_bad_audio, "rows_of": rows_of, "job_type": job_type, "engine": engine,
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )  # fmt: skip
    rows = [json.loads(r["row"]) for r in ds.take_all()]
    return sorted(rows, key=lambda r: r["index"])


# --- merge ----------------------------------------------------------------------------------------


def read_part(path: Path):
    _, pq = _pyarrow()
    if not Path(path).is_file():
        raise EmovoxError(f"{path}: no such part")
    try:
        t = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own types for damaged files
        raise EmovoxError(f"{path}: not a readable parquet file ({exc})") from None
    meta = (t.schema.metadata or {}).get(META_KEY)
    if meta is None:
        raise EmovoxError(f"{path}: not an emovox prediction part (no '{META_KEY.decode()}' metadata)")
    return t, json.loads(meta)


def merge_parts(paths: Sequence[Path]):
    """One table from the parts of one run, sorted by index; every check names the file at fault."""
    pa, _ = _pyarrow()
    if not paths:
        raise EmovoxError("nothing to merge: give the part files")
    parts = [(Path(p), *read_part(p)) for p in paths]
    first_path, _, first = parts[0]
    same = ("inputs", "inputs_sha256", "chunk", "model_sha256", "labels")
    count = Shard.parse(first["shard"]).count
    seen: dict[int, Path] = {}
    for path, _, meta in parts:
        for key in same:
            if meta.get(key) != first.get(key):
                raise EmovoxError(
                    f"{path}: {key} differs from {first_path}'s; these parts are not of one run (same model, inputs, batch size)"
                )
        s = Shard.parse(meta["shard"])
        if s.count != count:
            raise EmovoxError(f"{path}: shard {s} of a split into {s.count}, but {first_path} is of {count}")
        if s.index in seen:
            raise EmovoxError(f"{path}: shard {s} is given twice (also {seen[s.index]})")
        seen[s.index] = path
    absent = [i for i in range(1, count + 1) if i not in seen]
    if absent:
        raise EmovoxError(f"shard(s) {', '.join(f'{i}/{count}' for i in absent)} missing; merge needs every part")
    merged = pa.concat_tables([t.replace_schema_metadata(None) for _, t, _ in parts])
    index = merged.column("index").to_pylist()
    if len(set(index)) != len(index):
        dup = next(i for i in index if index.count(i) > 1)
        raise EmovoxError(f"input {dup} appears in more than one part: the parts overlap")
    if sorted(index) != list(range(first["inputs"])):
        raise EmovoxError(f"the parts hold {len(index)} of {first['inputs']} inputs; some part is incomplete")
    merged = merged.sort_by("index")
    meta = {k: first[k] for k in (*same, "model")} | {"shard": "1/1", "rows": len(index), "merged_from": count}
    return merged.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


@app.command()
def merge(
    parts: list[Path] = typer.Argument(..., help="part-*.parquet files of one `emovox predict --shard i/n` run."),
    out: Path = typer.Option(..., "--out", help="The merged parquet file (rows in input order)."),
) -> None:
    """Merge prediction parts by utterance id into one file equal to an unsharded run's."""
    t = merge_parts(parts)
    write_table(t, out)
    errors = sum(v is not None for v in t.column("error").to_pylist())
    typer.echo(f"merged {len(parts)} part(s): {t.num_rows} predictions ({errors} unreadable inputs) -> {out}")

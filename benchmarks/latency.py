"""Latency and throughput of the EmoDB Whisper-base recognizer: torch fp32, torch int8, its runtime fp32/int8.

Measures, on this machine:
- latency of one 4 s clip (p50/p95 over ``--repeats`` sequential calls, preprocessing included),
- throughput with ``--clients`` concurrent clients (threads calling the same loaded model),
- the same clients through the HTTP service (``emovox serve``'s app under uvicorn, batched queue),
and prints a table and one final machine-readable line ``BENCHMARK {json}``.

The recognizer is trained with ``recipes/emodb/emodb-whisper-base-frozen.yaml`` (``train_recognizer``)
when ``--model-dir`` does not exist yet; that needs ``../shared`` (EmoDB and Whisper-base).

    python benchmarks/latency.py --model-dir runs/emodb-whisper-base-frozen-model

This is a measurement, not a test: it asserts nothing and prints ratios to fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emovox.audio import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", ROOT.parent / "shared"))


def four_second_clip() -> np.ndarray:
    """Real speech: two EmoDB utterances back to back (1.9 s and 3.0 s), cut to 4 s."""
    from emovox.audio import load_audio

    wav = SHARED / "data" / "emodb" / "wav"
    clip = np.concatenate([load_audio(wav / "03a01Wa.wav"), load_audio(wav / "08a02Tb.wav")])
    return clip[: 4 * SAMPLE_RATE]


def ensure_model(model_dir: Path, recipe: Path):
    from emovox.config import load_config
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    if not (model_dir / "emovox.json").is_file():
        print(f"training {model_dir} from {recipe} (frozen Whisper-base features on EmoDB) ...", flush=True)
        t0 = time.time()
        train_recognizer(load_config(recipe), model_dir, progress=True)
        print(f"trained in {time.time() - t0:.0f} s", flush=True)
    return Recognizer.load(model_dir)


def latencies(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, dict]:
    """p50/p95 per variant; the variants take turns call by call, so a change in machine load
    (other processes) affects them all alike instead of whichever was measured at that moment."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, t in times.items():
        t.sort()
        out[name] = {
            "p50_ms": 1000 * statistics.median(t),
            "p95_ms": 1000 * t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))],
            "mean_ms": 1000 * statistics.fmean(t),
        }
    return out


def check_clips(n: int = 24) -> list[np.ndarray]:
    """Real EmoDB utterances (every k-th file, all speakers and emotions) to compare outputs on."""
    from emovox.audio import load_audio

    files = sorted((SHARED / "data" / "emodb" / "wav").glob("*.wav"))
    step = max(1, len(files) // n)
    return [load_audio(f) for f in files[::step][:n]]


def agreement(probs: np.ndarray, reference: np.ndarray) -> dict:
    return {
        "max_abs_prob_diff": float(np.abs(probs - reference).max()),
        "label_agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
    }


def throughput(fn: Callable[[], object], clients: int, per_client: int) -> dict:
    errors: list[BaseException] = []

    def client():
        try:
            for _ in range(per_client):
                fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    n = clients * per_client
    return {"clips_per_s": n / seconds, "clips": n, "seconds": seconds}


def torch_int8(rec):
    """The recognizer with every nn.Linear dynamically quantised to int8 (torch.ao)."""
    import warnings

    import torch

    from emovox.inference.recognizer import Recognizer

    with warnings.catch_warnings():  # torch.ao's dynamic quantisation is deprecated in favour of torchao (not installed)
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(rec.model), {torch.nn.Linear}, dtype=torch.qint8)
        model.forward_backbone_inputs(rec.backbone.preprocess([np.zeros(SAMPLE_RATE, np.float32)]))  # the remaining notices
    return Recognizer(model, rec.labels, dict(rec.info))


def http_throughput(rec, clip: np.ndarray, clients: int, per_client: int, max_batch: int) -> dict:
    """Clients posting the clip to the real service (uvicorn on 127.0.0.1, in a thread of this process)."""
    import io

    import httpx
    import soundfile as sf
    import uvicorn

    from emovox.serve.app import create_app
    from emovox.serve.limits import ServeConfig

    app = create_app(rec, ServeConfig(max_batch=max_batch, max_queue=4 * clients))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    buf = io.BytesIO()
    sf.write(buf, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    body = buf.getvalue()
    url = f"http://127.0.0.1:{port}/predict"
    local = threading.local()

    def post():
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(timeout=120)
        r = c.post(url, files={"audio": ("clip.wav", body, "audio/wav")})
        r.raise_for_status()

    try:
        post()  # warm-up
        result = throughput(post, clients, per_client)
        result["batches"] = app.state.worker.batches
        result["mean_batch"] = app.state.worker.served / max(1, app.state.worker.batches)
        return result
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "runs" / "emodb-whisper-base-frozen-model")
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "emodb" / "emodb-whisper-base-frozen.yaml")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=8, help="service batch size for the HTTP row")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and onnxruntime intra-op threads")
    args = ap.parse_args(argv)

    import torch

    from emovox.inference.export import write_runtime
    from emovox.inference.runtime import Runtime

    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # the recipe's ../shared paths are relative to the project root
    rec = ensure_model(args.model_dir, args.recipe)
    clip = four_second_clip()
    variants: dict[str, Callable[[], object]] = {}
    variants["torch fp32"] = lambda: rec.predict_proba([clip])
    rec8 = torch_int8(rec)
    variants["torch int8 (dynamic, Linear)"] = lambda: rec8.predict_proba([clip])
    checks = check_clips()
    report = write_runtime(rec.model, args.model_dir, int8=True, samples=checks)  # the recognizer's runtime, with int8
    onnx32 = Runtime.load(args.model_dir, threads=args.threads)
    onnx8 = Runtime.load(args.model_dir, int8=True, threads=args.threads)
    variants["onnx fp32"] = lambda: onnx32.predict_proba([clip])
    variants["onnx int8 (dynamic, MatMul)"] = lambda: onnx8.predict_proba([clip])

    reference = rec.predict_proba(checks)
    agree = {
        "torch fp32": agreement(reference, reference),
        "torch int8 (dynamic, Linear)": agreement(rec8.predict_proba(checks), reference),
        "onnx fp32": agreement(onnx32.predict_proba(checks), reference),
        "onnx int8 (dynamic, MatMul)": agreement(onnx8.predict_proba(checks), reference),
    }
    print(f"latency of one 4 s clip, {args.repeats} calls per variant, in turns ...", flush=True)
    lat = latencies(variants, args.repeats)
    rows = []
    for name, fn in variants.items():
        print(f"throughput of {name} with {args.clients} clients ...", flush=True)
        rows.append({"variant": name, **lat[name], **throughput(fn, args.clients, args.per_client), **agree[name]})
    print("measuring torch fp32 through the HTTP service ...", flush=True)
    http = http_throughput(rec, clip, args.clients, args.per_client, args.max_batch)

    base = rows[0]
    print()
    print(f"max |dp| and same label: against torch fp32 on {len(checks)} EmoDB utterances")
    print(f"EmoDB Whisper-base recognizer ({rec.info.get('kind')}), one 4 s clip, {args.threads} threads, "
          f"{args.clients} concurrent clients x {args.per_client} clips; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    header = (f"{'variant':32s} {'p50 ms':>8s} {'p95 ms':>8s} {'speed-up':>9s} {'clips/s @' + str(args.clients):>12s} "
              f"{'max |dp|':>9s} {'same label':>10s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['variant']:32s} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {base['p50_ms'] / r['p50_ms']:8.2f}x "
              f"{r['clips_per_s']:12.2f} {r['max_abs_prob_diff']:9.1e} {r['label_agreement']:10.0%}")
    print(f"{'torch fp32 via HTTP (batched)':32s} {'':8s} {'':8s} {'':9s} {http['clips_per_s']:12.2f}   "
          f"(mean batch {http['mean_batch']:.1f})")
    result = {
        "model_dir": str(args.model_dir),
        "clip_seconds": 4.0,
        "threads": args.threads,
        "clients": args.clients,
        "agreement_clips": len(checks),
        "cores": os.cpu_count(),
        "variants": rows,
        "http_torch_fp32": http,
        "onnx_sizes_mb": {"fp32": report.size_bytes / 1e6, "int8": report.int8_size_bytes / 1e6},
    }
    print("BENCHMARK " + json.dumps(result, separators=(",", ":")))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

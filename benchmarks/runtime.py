"""The runtime (ONNX encoder + numpy head) against torch and against itself: same answers, latency, service.

Three measurements of one recognizer that has a runtime (``emovox train`` writes it; ``emovox export
MODEL_DIR --int8`` adds the int8 encoder):

``agreement``  every EmoDB clip through torch (``Recognizer.predict_proba``, the padded, masked path
               ``predict`` takes) and through the runtime (fp32, and int8 when present): label
               agreement and the largest probability difference.
``latency``    warm latency of one 4 s clip, in turns: the whole runtime prediction from a file
               (decode, log-mel, encoder, head, speech check) against the truncated ONNX encoder alone
               on the prepared input (the floor: its arithmetic); p50/p95 wall and CPU per call.
``serve``      ``emovox serve`` (the runtime, in a subprocess) with ``--clients`` concurrent clients
               posting EmoDB clips, against the bare runtime computing the same clips one by one in
               this process; rounds alternate the two, so a change in machine load hits both.
``depth``      training's side of the same cut: CPU seconds of the frozen Whisper-base extraction of
               ``--clips`` EmoDB clips (one thread, fp32) when it stops after hidden state 3, 5 or 6
               (``Backbone.stop_after``), in turns.

    python benchmarks/runtime.py agreement --model-dir DIR [--emodb ../shared/data/emodb]
    python benchmarks/runtime.py latency --model-dir DIR [--repeats 40]
    python benchmarks/runtime.py serve --model-dir DIR [--clients 16] [--clips 64] [--rounds 3]
    python benchmarks/runtime.py depth [--whisper ../shared/models/whisper-base] [--clips 40]

Each prints a readable summary and a final ``BENCHMARK {json}`` line, with the load average. A
measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", ROOT.parent / "shared"))
SAMPLE_RATE = 16_000


def load_clips(emodb: Path, limit: int | None = None, every: int = 1) -> tuple[list[str], list[np.ndarray]]:
    from emovox.audio import load_audio

    files = sorted((emodb / "wav").glob("*.wav"))[::every][:limit]
    return [f.name for f in files], [load_audio(f) for f in files]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stats_ms(values: list[float]) -> dict:
    v = sorted(values)
    return {"p50_ms": 1000 * statistics.median(v), "p95_ms": 1000 * v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]}


# --- agreement ------------------------------------------------------------------------------------------------------


def agreement(args) -> dict:
    from emovox.inference.recognizer import Recognizer
    from emovox.inference.runtime import Runtime

    names, clips = load_clips(args.emodb)
    print(f"{len(clips)} EmoDB clips; load average {load_average()}", flush=True)
    t0 = time.perf_counter()
    reference = Recognizer.load(args.model_dir).predict_proba(clips)
    seconds = {"torch": time.perf_counter() - t0}
    engines = {"onnx": Runtime.load(args.model_dir, threads=args.threads)}
    if engines["onnx"].manifest.get("int8"):
        engines["onnx-int8"] = Runtime.load(args.model_dir, int8=True, threads=args.threads)
    result = {"clips": len(clips), "model_dir": str(args.model_dir), "engines": {}}
    for name, rt in engines.items():
        t0 = time.perf_counter()
        probs = rt.predict_proba(clips)
        seconds[name] = time.perf_counter() - t0
        diff = np.abs(probs - reference)
        same = probs.argmax(1) == reference.argmax(1)
        result["engines"][name] = {
            "label_agreement": float(same.mean()), "max_abs_prob_diff": float(diff.max()),
            "mean_abs_prob_diff": float(diff.mean()), "different_labels": [n for n, s in zip(names, same, strict=True) if not s],
        }  # fmt: skip
    result["seconds"] = seconds
    result["load_average"] = load_average()
    print(f"{'engine':10s} {'same label':>10s} {'max |dp|':>10s} {'mean |dp|':>10s} {'seconds':>8s}")
    print(f"{'torch':10s} {'(reference)':>10s} {'':>10s} {'':>10s} {seconds['torch']:8.1f}")
    for name, r in result["engines"].items():
        print(f"{name:10s} {r['label_agreement']:10.2%} {r['max_abs_prob_diff']:10.1e} {r['mean_abs_prob_diff']:10.1e} "
              f"{seconds[name]:8.1f}   {', '.join(r['different_labels'][:5])}")
    return result


# --- latency --------------------------------------------------------------------------------------------------------


def four_second_file(tmp: Path) -> Path:
    """Real speech: two EmoDB utterances back to back (1.9 s and 3.0 s), cut to 4 s, as a WAV file."""
    import soundfile as sf

    from emovox.audio import load_audio

    wav = SHARED / "data" / "emodb" / "wav"
    clip = np.concatenate([load_audio(wav / "03a01Wa.wav"), load_audio(wav / "08a02Tb.wav")])[: 4 * SAMPLE_RATE]
    path = tmp / "four-seconds.wav"
    sf.write(str(path), clip, SAMPLE_RATE, subtype="PCM_16")
    return path


def latency(args) -> dict:
    import tempfile

    from emovox.audio import load_audio
    from emovox.inference.runtime import INPUT, OUTPUT, Runtime

    path = four_second_file(Path(tempfile.mkdtemp(prefix="emovox-latency-")))
    rt = Runtime.load(args.model_dir, threads=args.threads)
    features = rt.inputs([load_audio(path)])[0][None]  # [1, 80, 400]: what the encoder reads
    variants = {
        "runtime predict(file)": lambda: rt.predict(path),
        "ONNX encoder alone": lambda: rt.session.run([OUTPUT], {INPUT: features}),
    }
    for fn in variants.values():
        for _ in range(3):
            fn()
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    result = {"clip_seconds": 4.0, "repeats": args.repeats, "threads": args.threads or os.cpu_count(), "variants": {}}
    for name in variants:
        result["variants"][name] = {**stats_ms(wall[name]), "cpu_p50_ms": 1000 * statistics.median(cpu[name])}
    full, floor = result["variants"]["runtime predict(file)"], result["variants"]["ONNX encoder alone"]
    result["ratio_p50"] = full["p50_ms"] / floor["p50_ms"]
    result["ratio_cpu_p50"] = full["cpu_p50_ms"] / floor["cpu_p50_ms"]
    result["load_average"] = load_average()
    print(f"one 4 s clip, {args.repeats} calls each, in turns; {result['threads']} threads; load average {result['load_average']}")
    for name, r in result["variants"].items():
        print(f"  {name:24s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  cpu p50 {r['cpu_p50_ms']:7.1f} ms")
    print(f"  whole prediction / encoder alone: p50 {result['ratio_p50']:.2f}x, cpu {result['ratio_cpu_p50']:.2f}x")
    return result


# --- the service ----------------------------------------------------------------------------------------------------


def serve(args) -> dict:
    import httpx
    import soundfile as sf

    from emovox.inference.runtime import Runtime

    names, clips = load_clips(args.emodb, args.clips, every=max(1, 535 // args.clips))
    bodies = []
    for c in clips:
        buf = io.BytesIO()
        sf.write(buf, c, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        bodies.append(buf.getvalue())
    audio_seconds = sum(len(c) for c in clips) / SAMPLE_RATE
    port = _free_port()
    cmd = [sys.executable, "-m", "emovox", "serve", str(args.model_dir), "--port", str(port), "--engine", "onnx",
           "--log-level", "warning", "--max-queue", str(4 * args.clients), "--max-batch", str(args.max_batch)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    rt = Runtime.load(args.model_dir, threads=args.threads)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).json()["engine"] == "onnx":
                    break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("emovox serve did not start") from None
                time.sleep(0.1)

        def over_http() -> float:
            todo = list(range(len(bodies)))
            lock = threading.Lock()
            errors: list[str] = []

            def client():
                with httpx.Client(timeout=300) as c:
                    while True:
                        with lock:
                            if not todo:
                                return
                            i = todo.pop()
                        r = c.post(f"{base}/predict", files={"audio": (names[i], bodies[i], "audio/wav")})
                        if r.status_code != 200:
                            errors.append(f"{names[i]}: {r.status_code} {r.text[:200]}")

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise RuntimeError(errors[0])
            return time.perf_counter() - t0

        def bare() -> float:
            t0 = time.perf_counter()
            for c in clips:
                rt.predict_proba([c])
            return time.perf_counter() - t0

        over_http(), bare()  # warm-up: first requests, first runs of each length
        rounds = []
        for _ in range(args.rounds):
            cpu0, c0 = _cpu_seconds(server.pid), time.process_time()
            http = over_http()
            server_cpu, client_cpu = _cpu_seconds(server.pid) - cpu0, time.process_time() - c0
            c0 = time.process_time()
            alone = bare()
            rounds.append({"http_s": http, "bare_s": alone, "server_cpu_s": server_cpu, "client_cpu_s": client_cpu,
                           "bare_cpu_s": time.process_time() - c0})
    finally:
        server.terminate()
        server.wait(timeout=30)
    n = len(clips)
    http_rate = [n / r["http_s"] for r in rounds]
    bare_rate = [n / r["bare_s"] for r in rounds]
    ratio = [h / b for h, b in zip(http_rate, bare_rate, strict=True)]
    result = {
        "clips": n, "audio_seconds": round(audio_seconds, 1), "clients": args.clients, "max_batch": args.max_batch,
        "rounds": rounds, "serve_clips_per_s": statistics.median(http_rate), "bare_clips_per_s": statistics.median(bare_rate),
        "ratio": statistics.median(ratio), "ratio_min": min(ratio), "load_average": load_average(),
    }  # fmt: skip
    print(f"{n} EmoDB clips ({audio_seconds:.0f} s of audio), {args.clients} clients, {args.rounds} rounds; "
          f"load average {result['load_average']}")
    for k, r in enumerate(rounds):
        print(f"  round {k + 1}: serve {n / r['http_s']:6.2f} clips/s (server cpu {r['server_cpu_s']:.1f} s, "
              f"clients' {r['client_cpu_s']:.1f} s), "
              f"bare runtime {n / r['bare_s']:6.2f} clips/s (cpu {r['bare_cpu_s']:.1f} s), ratio {ratio[k]:.2f}")
    print(f"  median: serve {result['serve_clips_per_s']:.2f} clips/s = {result['ratio']:.0%} of the bare runtime")
    return result


def depth(args) -> dict:
    import torch

    from emovox.backbones.loader import load_backbone
    from emovox.models.extraction import extract_pooled

    torch.set_num_threads(1)
    _, clips = load_clips(args.emodb, args.clips, every=max(1, 535 // args.clips))
    backbone = load_backbone(str(args.whisper))
    tops = {"states 0-6 (all)": None, "states 0-5": 5, "states 0-3": 3}
    cpu: dict[str, list[float]] = {name: [] for name in tops}
    for _ in range(args.rounds):
        for name, top in tops.items():
            c = time.process_time()
            extract_pooled(backbone, clips, progress=False, top=top)
            cpu[name].append(time.process_time() - c)
    result = {"clips": len(clips), "audio_seconds": round(sum(len(c) for c in clips) / SAMPLE_RATE, 1),
              "cpu_s": {name: statistics.median(v) for name, v in cpu.items()}, "load_average": load_average()}
    full = result["cpu_s"]["states 0-6 (all)"]
    print(f"frozen Whisper-base extraction of {len(clips)} EmoDB clips ({result['audio_seconds']} s), one thread, fp32; "
          f"load average {result['load_average']}")
    for name, seconds in result["cpu_s"].items():
        print(f"  {name:18s} {seconds:6.2f} CPU-s  ({seconds / full:.0%})")
    return result


def _cpu_seconds(pid: int) -> float:
    """User + system seconds of a running process and its reaped children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("agreement", "latency", "serve", "depth"):
        p = sub.add_parser(name)
        p.add_argument("--model-dir", type=Path, required=name != "depth", help="a recognizer directory with a runtime")
        p.add_argument("--emodb", type=Path, default=SHARED / "data" / "emodb")
        p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    sub.choices["latency"].add_argument("--repeats", type=int, default=40)
    sub.choices["serve"].add_argument("--clients", type=int, default=16)
    sub.choices["serve"].add_argument("--clips", type=int, default=64)
    sub.choices["serve"].add_argument("--rounds", type=int, default=3)
    sub.choices["serve"].add_argument("--max-batch", type=int, default=8)
    sub.choices["depth"].add_argument("--whisper", type=Path, default=SHARED / "models" / "whisper-base")
    sub.choices["depth"].add_argument("--clips", type=int, default=40)
    sub.choices["depth"].add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    result = {"agreement": agreement, "latency": latency, "serve": serve, "depth": depth}[args.what](args)
    result["what"] = args.what
    print("BENCHMARK " + json.dumps(result, separators=(",", ":")))
    return result


if __name__ == "__main__":
    main()

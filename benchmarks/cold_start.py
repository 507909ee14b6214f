"""Cold start of ``emovox predict MODEL_DIR one.wav``: the runtime against torch, and where the seconds go.

Every measurement is a fresh Python process (the OS file cache is warm after the first run: this
is the cold start a user sees on the second call, not after a reboot). Three views:

1. whole commands, timed from outside: ``python -c pass``, ``emovox --version``, ``emovox --help``;
2. ``emovox predict MODEL_DIR clip --quiet`` with ``--engine onnx`` (the recognizer's runtime) and
   ``--engine torch``, run in turns (A B A B ...) so that a change in machine load hits both; wall
   and CPU seconds (user + system of the finished child, the OS's own accounting) and the ratio
   torch / runtime taken pair by pair;
3. one ``predict`` taken apart inside a fresh process, for each engine: imports, loading, the first
   and a second prediction.

    python benchmarks/cold_start.py --model-dir /tmp/emodb-frozen [--clip a.wav] [--repeat 5]

A ``--model-dir`` that does not exist yet is trained first with
``emovox train recipes/emodb/emodb-whisper-base-frozen.yaml --out MODEL_DIR`` (minutes; it writes the
runtime); one without a runtime gets one with ``emovox export MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", ROOT.parent / "shared"))

# Run inside a fresh process; each prints one JSON object of stage -> seconds.
STAGES_TORCH = r"""
import json, sys, time
t0 = time.perf_counter(); out = {}
def mark(name):
    global t0
    t = time.perf_counter(); out[name] = t - t0; t0 = t
import emovox.cli.predict
mark("import emovox CLI")
import torch
mark("import torch")
import importlib, pathlib
family = json.loads(next((pathlib.Path(sys.argv[1]) / "branches").glob("*/emovox_backbone.json")).read_text())["spec"]["family"]
module = {"whisper": "transformers.models.whisper.modeling_whisper"}.get(family, "transformers")
importlib.import_module(module)
mark(f"import {module.replace('transformers.models.', '')}")
from emovox.inference.recognizer import Recognizer
mark("import emovox.inference.recognizer (rest)")
rec = Recognizer.load(sys.argv[1])
mark("Recognizer.load")
rec.predict(sys.argv[2])
mark("first predict (decode + forward)")
rec.predict(sys.argv[2])
mark("second predict")
print(json.dumps(out))
"""
STAGES_RUNTIME = r"""
import json, sys, time
t0 = time.perf_counter(); out = {}
def mark(name):
    global t0
    t = time.perf_counter(); out[name] = t - t0; t0 = t
import emovox.cli.predict
mark("import emovox CLI")
import onnxruntime
mark("import onnxruntime")
from emovox.inference.runtime import Runtime
mark("import emovox.inference.runtime (rest)")
rec = Runtime.load(sys.argv[1])
mark("Runtime.load (sha256 checks, session)")
rec.predict(sys.argv[2])
mark("first predict (decode + forward)")
rec.predict(sys.argv[2])
mark("second predict")
print(json.dumps(out))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, cpu) seconds of one run: cpu is the finished child's user + system time."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall, usage.ru_utime + usage.ru_stime


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="recognizer directory (trained first if missing)")
    parser.add_argument("--clip", type=Path, default=None, help="audio file to predict (default: the first EmoDB clip)")
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per measurement (median reported)")
    args = parser.parse_args()
    python = sys.executable
    emovox = shutil.which("emovox", path=str(Path(python).parent)) or "emovox"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    if not (args.model_dir / "emovox.json").is_file():
        print(f"training {args.model_dir} first (emovox train recipes/emodb/emodb-whisper-base-frozen.yaml)", flush=True)
        subprocess.run([emovox, "train", "recipes/emodb/emodb-whisper-base-frozen.yaml", "--out", str(args.model_dir), "--quiet"],
                       cwd=ROOT, env=env, check=True)
    if not (args.model_dir / "runtime" / "runtime.json").is_file():
        subprocess.run([emovox, "export", str(args.model_dir), "--quiet"], cwd=ROOT, env=env, check=True)
    clip = args.clip or SHARED / "data" / "emodb" / "wav" / "08a02Tb.wav"  # 3.0 s of real speech
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; clip {clip}")

    commands = {
        "python -c pass": [python, "-c", "pass"],
        "emovox --version": [emovox, "--version"],
        "emovox --help": [emovox, "--help"],
    }
    predict = {engine: [emovox, "predict", str(args.model_dir), str(clip), "--quiet", "--engine", engine]
               for engine in ("onnx", "torch")}
    for cmd in predict.values():
        timed(cmd, env)  # warm the OS file cache once
    print("\nwhole commands, fresh processes: median (min, max) seconds")
    for name, cmd in commands.items():
        runs = [timed(cmd, env) for _ in range(args.repeat)]
        print(f"  {name:44s} wall {summary([w for w, _ in runs])}   cpu {summary([c for _, c in runs])}", flush=True)
    pairs = [(timed(predict["onnx"], env), timed(predict["torch"], env)) for _ in range(args.repeat)]
    result = {}
    for i, engine in enumerate(("onnx", "torch")):
        wall, cpu = [p[i][0] for p in pairs], [p[i][1] for p in pairs]
        result[engine] = {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}
        print(f"  {'emovox predict MODEL_DIR clip --engine ' + engine:44s} wall {summary(wall)}   cpu {summary(cpu)}")
    ratios_wall = [t[0] / o[0] for o, t in pairs]
    ratios_cpu = [t[1] / o[1] for o, t in pairs]
    print(f"  {'torch / runtime, pair by pair':44s} wall {summary(ratios_wall)}   cpu {summary(ratios_cpu)}")
    result["ratio_wall"], result["ratio_cpu"] = statistics.median(ratios_wall), statistics.median(ratios_cpu)

    for engine, code in (("onnx", STAGES_RUNTIME), ("torch", STAGES_TORCH)):
        print(f"\none predict taken apart, engine {engine} (fresh process each time), seconds per stage: median (min, max)")
        runs = []
        for _ in range(args.repeat):
            done = subprocess.run([python, "-c", code, str(args.model_dir), str(clip)], env=env, capture_output=True, text=True,
                                  check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for stage in runs[0]:
            print(f"  {stage:50s} {summary([r[stage] for r in runs])}")
        print(f"  {'total':50s} {summary([sum(r.values()) for r in runs])}")
    result["load_average"] = os.getloadavg()
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("BENCHMARK " + json.dumps(result))


if __name__ == "__main__":
    main()

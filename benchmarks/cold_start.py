"""Cold start of ``emovox predict MODEL_DIR one.wav``: where the seconds go (prints seconds, asserts nothing).

Every measurement is a fresh Python process (the OS file cache is warm after the first run: this
is the cold start a user sees on the second call, not after a reboot). Two views:

1. whole commands, timed from outside: ``python -c pass``, ``emovox --version``, ``emovox --help``,
   ``import torch``, ``import`` of transformers' Whisper model, and ``emovox predict`` itself;
2. one ``predict`` taken apart inside a fresh process: importing the CLI, torch, the backbone's
   transformers module, ``Recognizer.load`` (reading and building the model), the first and a
   second prediction.

    python benchmarks/cold_start.py --model-dir /tmp/emodb-frozen [--clip a.wav] [--repeat 3]

A ``--model-dir`` that does not exist yet is trained first with
``emovox train recipes/emodb-whisper-base-frozen.yaml --out MODEL_DIR`` (minutes).
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

# Runs inside a fresh process and prints one JSON object of stage -> seconds.
STAGES = r"""
import json, sys, time
t0 = time.perf_counter(); out = {}
def mark(name):
    global t0
    t = time.perf_counter(); out[name] = t - t0; t0 = t
import emovox.cli.predict
mark("import emovox CLI")
import torch
mark("import torch")
import json as _j, pathlib
family = _j.loads((pathlib.Path(sys.argv[1]) / "backbone" / "emovox_backbone.json").read_text())["spec"]["family"]
import importlib
module = {"whisper": "transformers.models.whisper.modeling_whisper"}.get(family, "transformers")
importlib.import_module(module)
mark(f"import {module.replace('transformers.models.', '')}")
from emovox.recognizer import Recognizer
mark("import emovox.recognizer (rest)")
rec = Recognizer.load(sys.argv[1])
mark("Recognizer.load")
rec.predict(sys.argv[2])
mark("first predict (decode + forward)")
rec.predict(sys.argv[2])
mark("second predict")
print(json.dumps(out))
"""


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="recognizer directory (trained first if missing)")
    parser.add_argument("--clip", type=Path, default=None, help="audio file to predict (default: the first EmoDB clip)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (median reported)")
    args = parser.parse_args()
    python = sys.executable
    emovox = shutil.which("emovox", path=str(Path(python).parent)) or "emovox"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    if not (args.model_dir / "emovox.json").is_file():
        print(f"training {args.model_dir} first (emovox train recipes/emodb-whisper-base-frozen.yaml)", flush=True)
        subprocess.run([emovox, "train", "recipes/emodb-whisper-base-frozen.yaml", "--out", str(args.model_dir), "--quiet"],
                       cwd=ROOT, env=env, check=True)
    clip = args.clip or sorted((SHARED / "data" / "emodb" / "wav").glob("*.wav"))[0]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; clip {clip}")

    commands = {
        "python -c pass": [python, "-c", "pass"],
        "emovox --version": [emovox, "--version"],
        "emovox --help": [emovox, "--help"],
        "python -c 'import torch'": [python, "-c", "import torch"],
        "import transformers' Whisper model": [python, "-c", "import transformers.models.whisper.modeling_whisper"],
        "emovox predict MODEL_DIR clip --quiet": [emovox, "predict", str(args.model_dir), str(clip), "--quiet"],
    }
    print("\nwhole commands, wall seconds over fresh processes: median (min, max)")
    timed(commands["emovox predict MODEL_DIR clip --quiet"], env)  # warm the OS file cache once
    for name, cmd in commands.items():
        print(f"  {name:40s} {summary([timed(cmd, env) for _ in range(args.repeat)])}", flush=True)

    print("\none predict taken apart (fresh process each time), seconds per stage: median (min, max)")
    runs = []
    for _ in range(args.repeat):
        done = subprocess.run([python, "-c", STAGES, str(args.model_dir), str(clip)], env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for stage in runs[0]:
        print(f"  {stage:50s} {summary([r[stage] for r in runs])}")
    totals = [sum(r.values()) for r in runs]
    print(f"  {'total':50s} {summary(totals)}")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

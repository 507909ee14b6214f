"""Does a recognizer learn the clip length? Issue 9's table, before and after the fix.

A corpus cut to one length (many public copies of EmoDB, RAVDESS, CREMA-D are) lets a model read the
length instead of the voice. This script reproduces the setting in which emovox 0.1 failed: the real
EmoDB clips of 8 speakers are cut or padded to exactly 2.0 s and a recognizer is trained on them; the
2 other speakers' clips are then presented as the recognizer will meet them in use: at 2.0 s like its
training data, 0.1 s shorter or longer, padded to 4 s, and at their original lengths (1.2-9.0 s).

Two systems are trained on the same data and seed:

- ``before``: emovox 0.1's main recipe and defaults: a learned weighted sum of the 7 Whisper-base
  layers, standardised with ``std.clamp_min(1e-5)`` (``std_floor: 0``), dropout + linear head trained
  with Adam and early stopping, no length augmentation;
- ``after``: today's main recipe (``recipes/emodb/emodb-whisper-base-frozen.yaml``) with today's defaults:
  relative variance floor, one length-augmented copy per training clip (random crop 60-100 %, then
  0-150 % silence), logistic head chosen by inner speaker-group log-loss, temperature-calibrated.

For each input variant: accuracy, the share of the most frequent predicted label (1.0 = one label for
everything, as in the issue's "all neutral"), mean top probability, and the share of wrong answers
given with p > 0.99. Run from the project root (about 5 min on 2 CPU cores)::

    python benchmarks/length_invariance.py [--emodb ../shared/data/emodb] [--whisper ../shared/models/whisper-base]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

SR = 16000
ROOT = Path(__file__).resolve().parents[1]
TEST_SPEAKERS = ("14", "16")

BEFORE = {
    "model": {"mode": "frozen", "layer_weights": True, "standardize": True, "std_floor": 0.0, "dropout": 0.1},
    "train": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 32, "max_epochs": 60, "patience": 10,
              "class_weights": "inverse", "threads": 1, "augment": {"length": False}},
}


def fit(clip: np.ndarray, n: int) -> np.ndarray:
    """Cut to, or pad with silence to, exactly ``n`` samples (how one-length corpus copies are made)."""
    return clip[:n] if len(clip) >= n else np.concatenate([clip, np.zeros(n - len(clip), np.float32)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emodb", default=str(ROOT.parent / "shared" / "data" / "emodb"))
    ap.add_argument("--whisper", default=str(ROOT.parent / "shared" / "models" / "whisper-base"))
    ap.add_argument("--work", default="runs/length-invariance", help="scratch folder (uniform copy, cache, recognizers)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from emovox.config import config_from_dict
    from emovox.corpora import load_corpus
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import train_recognizer

    work = Path(args.work)
    (work / "u2").mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(f"emodb:{args.emodb}")
    rows = ["path,label,speaker"]
    for u in corpus:
        if u.speaker not in TEST_SPEAKERS:
            path = work / "u2" / f"{u.id}.wav"
            if not path.exists():
                sf.write(str(path), fit(sf.read(str(u.audio), dtype="float32")[0], 2 * SR), SR)
            rows.append(f"{path.resolve()},{u.label},{u.speaker}")
    (work / "u2.csv").write_text("\n".join(rows) + "\n")
    tests = [u for u in corpus if u.speaker in TEST_SPEAKERS]
    truth = np.array([corpus.labels.index(u.label) for u in tests])
    originals = [sf.read(str(u.audio), dtype="float32")[0] for u in tests]
    two = [fit(c, 2 * SR) for c in originals]
    variants = {
        "2.0 s, as trained": two,
        "cropped to 1.9 s": [c[: int(1.9 * SR)] for c in two],
        "padded to 2.1 s": [fit(c, int(2.1 * SR)) for c in two],
        "padded to 4 s": [fit(c, 4 * SR) for c in two],
        "original lengths (1.2-9.0 s)": originals,
    }

    recipe = yaml.safe_load((ROOT / "recipes" / "emodb" / "emodb-whisper-base-frozen.yaml").read_text())
    common = {
        "corpus": f"manifest:{(work / 'u2.csv').resolve()}?labels={','.join(corpus.labels)}",
        "protocol": "leave-one-speaker-out", "validation": "strict", "cache_dir": str(work / "cache"),
    }
    systems = {
        "before": {**common, "name": "before", "model": {**BEFORE["model"], "backbone": args.whisper},
                   "train": {**BEFORE["train"], "seed": args.seed}},
        "after": {**recipe, **common, "name": "after", "model": {**recipe["model"], "backbone": args.whisper},
                  "train": {**recipe.get("train", {}), "seed": args.seed}},
    }
    results: dict = {"test_speakers": TEST_SPEAKERS, "test_clips": len(tests), "seed": args.seed, "systems": {}}
    for name, data in systems.items():
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the uniform-duration warning is the point of the exercise
            train_recognizer(config_from_dict(data), work / name, progress=False, force=True)
        rec = Recognizer.load(work / name)
        table = {}
        for variant, clips in variants.items():
            probs = rec.predict_proba(clips)
            pred = probs.argmax(1)
            top = probs.max(1)
            wrong = pred != truth
            common_label = np.bincount(pred, minlength=len(corpus.labels)).argmax()
            table[variant] = {
                "accuracy": round(float(np.mean(~wrong)), 4),
                "most_frequent_label": corpus.labels[common_label],
                "most_frequent_share": round(float(np.mean(pred == common_label)), 4),
                "mean_top_p": round(float(top.mean()), 4),
                "wrong_at_p_over_0.99": round(float(np.mean(top[wrong] > 0.99)) if wrong.any() else 0.0, 4),
            }
        results["systems"][name] = {"seconds": round(time.time() - t0, 1), "variants": table}
        print(f"\n{name} (trained on 8 speakers' clips cut/padded to 2.0 s; tested on speakers {', '.join(TEST_SPEAKERS)}, "
              f"{len(tests)} clips; {time.time() - t0:.0f} s)")
        print("| input | accuracy | most frequent label (share) | mean top p | wrong answers at p > 0.99 |")
        print("| --- | --: | --- | --: | --: |")
        for variant, r in table.items():
            print(f"| {variant} | {r['accuracy']:.3f} | {r['most_frequent_label']} ({r['most_frequent_share']:.2f}) | "
                  f"{r['mean_top_p']:.3f} | {r['wrong_at_p_over_0.99']:.2f} |")
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {work / 'results.json'}")


if __name__ == "__main__":
    main()

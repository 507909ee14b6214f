"""An "other corpus" made from EmoDB's audio, to run the recipes unchanged on data shaped unlike EmoDB.

The recipes will be run on corpora this repository does not have (other languages, more speakers,
48 kHz sources). This builds a manifest corpus that differs from EmoDB in each way that can break a
recipe rather than merely change its score:

- every file is 48 kHz **stereo FLAC** (24-bit; the right channel at 0.8 x the left), so loading
  downmixes and resamples with soxr;
- the **label names** are other strings (``anger``, ``boredom``, ``disgust``, ``fear``, ``joy``,
  ``neutral``, ``sadness``) and the speakers are ``talker03``...;
- a **class is absent** for three speakers (their ``disgust`` clips are left out), so three test
  folds lack a class and their training parts are unbalanced differently;
- the first clip of every (speaker, anger|neutral) pair is a **long take**: that clip, 4 s of
  silence, the pair's second clip and 2 s of silence (25 clips over 6 s, up to 10.3 s: 4 pass the
  10 s crop).

    python benchmarks/other_corpus.py --out runs/data/emodb-other
    emovox cv recipes/emodb/emodb-whisper-base-frozen.yaml --set corpus=manifest:runs/data/emodb-other/manifest.csv --jobs 2

The output is derived data: keep it out of git (``runs/`` is ignored). Deterministic: no randomness.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))
#: EmoDB's emotion letter (sixth character of a file name) -> this corpus's label.
NAMES = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "joy", "T": "sadness", "N": "neutral"}
NO_DISGUST = ("03", "08", "09")
RATE = 48_000


def build(emodb: Path, out: Path) -> Path:
    """Write ``out/audio/*.flac`` and ``out/manifest.csv``; returns the manifest's path."""
    wavs = sorted((emodb / "wav").glob("*.wav"))
    if not wavs:
        raise SystemExit(f"{emodb}/wav: no EmoDB .wav files there (set EMOVOX_SHARED or --emodb)")
    groups: dict[tuple[str, str], list[Path]] = {}
    for f in wavs:
        speaker, letter = f.name[:2], f.name[5]
        if letter == "E" and speaker in NO_DISGUST:
            continue
        groups.setdefault((speaker, letter), []).append(f)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for (speaker, letter), files in sorted(groups.items()):
        for i, f in enumerate(files):
            x, sr = sf.read(f, dtype="float32")
            if i == 0 and len(files) > 1 and letter in "WN":
                y, _ = sf.read(files[1], dtype="float32")
                x = np.concatenate([x, np.zeros(sr * 4, np.float32), y, np.zeros(sr * 2, np.float32)])
            x48 = soxr.resample(x, sr, RATE)
            name = f"{speaker}_{f.stem}.flac"
            sf.write(out / "audio" / name, np.stack([x48, 0.8 * x48], axis=1), RATE, subtype="PCM_24")
            rows.append({"path": f"audio/{name}", "label": NAMES[letter], "speaker": f"talker{speaker}"})
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emodb", type=Path, default=SHARED / "data" / "emodb", help="the EmoDB release (wav/ inside)")
    parser.add_argument("--out", type=Path, required=True, help="where to write audio/ and manifest.csv")
    args = parser.parse_args()
    manifest = build(args.emodb, args.out)
    n = sum(1 for _ in manifest.open(encoding="utf-8")) - 1
    print(f"{manifest}: {n} utterances")


if __name__ == "__main__":
    main()

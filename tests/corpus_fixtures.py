"""Tiny corpora in each on-disk layout, written by tests into a tmp folder.

Every generator writes short synthetic WAVs and returns the path a spec should point at, e.g.
``load_corpus(f"iemocap:{make_iemocap_tree(tmp_path)}")``. The tone of each clip depends on its
label (``LABEL_TONES``), so a model trained on these fixtures has something real to learn.

The IEMOCAP tree imitates the real release, warts included: EmoEvaluation files with headers,
annotator lines and rows out of time order, a ``Categorical/`` sub-folder, macOS ``._`` files,
transcription lines that are not utterances and an utterance without a transcript.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

#: Tone (Hz) of each fixture clip, by canonical label, so that labels are learnable from audio.
LABEL_TONES: dict[str, float] = {
    "neutral": 200.0,
    "angry": 420.0,
    "happy": 330.0,
    "excited": 360.0,
    "sad": 150.0,
    "frustrated": 260.0,
    "surprised": 500.0,
    "calm": 180.0,
    "fearful": 470.0,
    "disgusted": 230.0,
    "bored": 170.0,
    "other": 300.0,
}

_IEMOCAP_TONE = {
    "neu": "neutral", "ang": "angry", "hap": "happy", "exc": "excited", "sad": "sad",
    "fru": "frustrated", "sur": "surprised", "xxx": "neutral",
}  # fmt: skip


def write_tone(
    path: Path,
    seconds: float = 0.25,
    *,
    sr: int = 16_000,
    freq: float = 220.0,
    channels: int = 1,
    subtype: str = "PCM_16",
    amplitude: float = 0.3,
) -> Path:
    """A sine of ``freq`` Hz; extra channels carry the same tone at decreasing amplitude."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    tone = amplitude * np.sin(2 * np.pi * freq * t)
    data = tone if channels == 1 else np.stack([tone / (c + 1) for c in range(channels)], axis=1)
    sf.write(str(path), data.astype(np.float32), sr, subtype=subtype)
    return path


# --- IEMOCAP ------------------------------------------------------------------------------

#: One improvised and one scripted dialogue per session: (utterance suffix, start, end, code, text).
#: Text None means the transcription file has no line for it.
IEMOCAP_DIALOGUES: dict[str, list[tuple[str, float, float, str, str | None]]] = {
    "F_impro01": [
        ("F000", 1.0, 1.8, "neu", "Excuse me."),
        ("M000", 2.0, 3.2, "ang", "Do you have your forms?"),
        ("F001", 3.5, 4.3, "exc", "Yeah, I got them right here!"),
        ("M001", 4.5, 5.1, "xxx", "Okay."),
        ("F002", 5.3, 6.1, "hap", "That's great [LAUGHTER]."),
        ("M002", 6.3, 7.0, "sad", "I lost everything."),
        ("F003", 7.2, 7.9, "fru", "This line is so long."),
        ("M003", 8.0, 8.6, "neu", None),
    ],
    "M_script01_1": [
        ("M000", 0.5, 1.2, "hap", "What a day."),
        ("F000", 1.4, 2.0, "sad", "I know."),
        ("M001", 2.2, 2.9, "ang", "Stop it."),
        ("F001", 3.0, 3.6, "sur", "Oh!"),
        ("M002", 3.8, 4.4, "neu", "Anyway."),
    ],
}

#: Utterances per session for each label set (derived by hand from IEMOCAP_DIALOGUES).
IEMOCAP_COUNTS_PER_SESSION = {
    ("4", True): {"angry": 2, "happy": 3, "neutral": 3, "sad": 2},
    ("4", False): {"angry": 2, "happy": 2, "neutral": 3, "sad": 2},
    ("6", False): {"angry": 2, "happy": 2, "neutral": 3, "sad": 2, "excited": 1, "frustrated": 1},
}


def iemocap_dialogue(session: int, key: str) -> str:
    """Name of fixture dialogue ``key`` (e.g. ``"F_impro01"``) in session ``session``."""
    return f"Ses{session:02d}{key}"


def make_iemocap_tree(root: Path, sessions: int = 2, *, seconds_scale: float = 0.25) -> Path:
    """An IEMOCAP release with ``sessions`` sessions of ``IEMOCAP_DIALOGUES``; returns its root.

    Clips last ``(end - start) * seconds_scale`` seconds to keep the tree small.
    """
    base = Path(root) / "IEMOCAP"
    for s in range(1, sessions + 1):
        sess = base / f"Session{s}"
        eval_dir = sess / "dialog" / "EmoEvaluation"
        trans_dir = sess / "dialog" / "transcriptions"
        (eval_dir / "Categorical").mkdir(parents=True, exist_ok=True)
        trans_dir.mkdir(parents=True, exist_ok=True)
        for key, rows in IEMOCAP_DIALOGUES.items():
            dialogue = iemocap_dialogue(s, key)
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for suffix, start, end, code, _ in reversed(rows):  # out of time order on purpose
                utt = f"{dialogue}_{suffix}"
                lines += [
                    f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 3.5000]",
                    "C-E1:\tNeutral;\t()",
                    "C-E2:\tFrustration;\tAnger;\t()",
                    "A-E1:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                write_tone(
                    sess / "sentences" / "wav" / dialogue / f"{utt}.wav",
                    (end - start) * seconds_scale,
                    freq=LABEL_TONES[_IEMOCAP_TONE[code]],
                )
            (eval_dir / f"{dialogue}.txt").write_text("\n".join(lines) + "\n")
            (eval_dir / f"._{dialogue}.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X resource fork\xff")
            (eval_dir / "Categorical" / f"{dialogue}_e1_cat.txt").write_text(f"{dialogue}_F000 :Neutral state; ()\n")
            t_lines = [
                f"{dialogue}_{suffix} [{start:08.4f}-{end:08.4f}]: {text}"
                for suffix, start, end, _, text in rows
                if text is not None
            ]
            t_lines.insert(2, f"{dialogue}_MXX0 [009.0000-009.5000]: [BREATHING]")
            t_lines.insert(1, "M: this line has no timestamp and is not an utterance")
            t_lines.append("")
            (trans_dir / f"{dialogue}.txt").write_text("\n".join(t_lines) + "\n")
    return base


# --- RAVDESS ------------------------------------------------------------------------------


def ravdess_name(emotion: int, actor: int, *, channel: int = 1, statement: int = 1, intensity: int = 1, rep: int = 1) -> str:
    return f"03-{channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}.wav"


def make_ravdess_tree(root: Path, actors: tuple[int, ...] = (1, 2), *, seconds: float = 0.2) -> Path:
    """Per actor: the 8 speech emotions (statements alternating) and 6 song emotions; returns the root."""
    from emovox.labels import RAVDESS_CODES

    base = Path(root) / "RAVDESS"
    for actor in actors:
        folder = base / f"Actor_{actor:02d}"
        for emotion in range(1, 9):
            name = ravdess_name(emotion, actor, statement=1 + emotion % 2)
            write_tone(folder / name, seconds, freq=LABEL_TONES[RAVDESS_CODES[f"{emotion:02d}"]])
        for emotion in range(1, 7):
            freq = LABEL_TONES[RAVDESS_CODES[f"{emotion:02d}"]]
            write_tone(folder / ravdess_name(emotion, actor, channel=2), seconds, freq=freq)
    (base / "README.txt").write_text("not audio; readers must ignore it\n")
    return base


# --- EmoDB --------------------------------------------------------------------------------

#: File stems of the fixture EmoDB copy.
EMODB_FILES = ("03a01Fa", "03a01Nc", "03b10Wb", "08a02Ta", "08b01Lb", "09a04Ea", "10a05Aa", "16b09Wa")


def make_emodb_tree(root: Path, *, seconds: float = 0.2) -> Path:
    from emovox.labels import EMODB_CODES

    base = Path(root) / "emodb"
    for stem in EMODB_FILES:
        write_tone(base / "wav" / f"{stem}.wav", seconds, freq=LABEL_TONES[EMODB_CODES[stem[5]]])
    return base


# --- MEACorpus ----------------------------------------------------------------------------

#: (id, transcript, label) rows of the fixture MEACorpus table.
MEACORPUS_ROWS = (
    ("mea_0001", "Estoy muy contento hoy.", "joy"),
    ("mea_0002", "Esto es horrible, qué asco.", "disgust"),
    ("mea_0003", "¡No me lo puedo creer, estoy furioso!", "anger"),
    ("mea_0004", "Me da mucho miedo salir.", "fear"),
    ("mea_0005", "Hoy es martes.", "neutral"),
    ("mea_0006", "Lo echo mucho de menos.", "sadness"),
    ("mea_0007", "", "neutral"),
)


def make_meacorpus_tree(
    root: Path,
    *,
    id_col: str = "id",
    text_col: str = "transcription",
    label_col: str = "label",
    table: str = "train.csv",
    audio_dir: str = "audio",
    seconds: float = 0.2,
) -> Path:
    """A release folder with one table and ``<audio_dir>/<id>.wav``; returns the folder."""
    from emovox.labels import MEACORPUS_CODES

    base = Path(root) / "meacorpus"
    base.mkdir(parents=True, exist_ok=True)
    with (base / table).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([id_col, text_col, label_col])
        for utt_id, text, label in MEACORPUS_ROWS:
            w.writerow([utt_id, text, label])
            write_tone(base / audio_dir / f"{utt_id}.wav", seconds, freq=LABEL_TONES[MEACORPUS_CODES[label]])
    return base


# --- manifests ----------------------------------------------------------------------------

#: Rows of the fixture manifest. Paths are relative to the manifest; ``long/dialogue.wav`` is a
#: 3 s recording of which three rows are cuts (one dialogue, two speakers).
MANIFEST_ROWS: tuple[dict, ...] = (
    {"path": "clips/a.wav", "label": "happy", "text": "hello there", "speaker": "spk1", "session": "s1"},
    {"path": "clips/b.wav", "label": "sad", "speaker": "spk2", "session": "s1"},
    {"path": "clips/c.wav", "label": "neutral", "text": "just a clip", "speaker": "spk1", "session": "s2"},
    {"id": "d1_t1", "path": "long/dialogue.wav", "label": "neutral", "text": "first turn", "speaker": "spk1",
     "session": "s2", "dialogue": "d1", "turn": 0, "start": 0.0, "end": 1.0},
    {"id": "d1_t2", "path": "long/dialogue.wav", "label": "angry", "text": "second, turn", "speaker": "spk2",
     "session": "s2", "dialogue": "d1", "turn": 1, "start": 1.0, "end": 2.0},
    {"id": "d1_t3", "path": "long/dialogue.wav", "label": "happy", "text": "third \"turn\"", "speaker": "spk1",
     "session": "s2", "dialogue": "d1", "turn": 2, "start": 2.0, "end": 3.0},
)  # fmt: skip

MANIFEST_COLUMNS_WRITTEN = ("id", "path", "label", "text", "speaker", "session", "dialogue", "turn", "start", "end")


def make_manifest(root: Path, fmt: str = "csv") -> Path:
    """A manifest (``fmt`` csv or jsonl) of ``MANIFEST_ROWS`` with its audio; returns the manifest path."""
    base = Path(root) / "manifest"
    write_tone(base / "clips" / "a.wav", 0.3, freq=LABEL_TONES["happy"])
    write_tone(base / "clips" / "b.wav", 0.3, freq=LABEL_TONES["sad"], sr=8000)
    write_tone(base / "clips" / "c.wav", 0.3, freq=LABEL_TONES["neutral"], sr=44_100, channels=2)
    # The long recording: one second per turn, each with its own label's tone.
    sr = 16_000
    t = np.arange(sr) / sr
    tones = [LABEL_TONES[r["label"]] for r in MANIFEST_ROWS[3:]]
    long = np.concatenate([0.3 * np.sin(2 * np.pi * f * t) for f in tones]).astype(np.float32)
    (base / "long").mkdir(parents=True, exist_ok=True)
    sf.write(str(base / "long" / "dialogue.wav"), long, sr)
    if fmt == "csv":
        out = base / "manifest.csv"
        with out.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS_WRITTEN)
            w.writeheader()
            for row in MANIFEST_ROWS:
                w.writerow(row)
    elif fmt == "jsonl":
        out = base / "manifest.jsonl"
        out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in MANIFEST_ROWS), encoding="utf-8")
    else:
        raise ValueError(f"fmt must be csv or jsonl, not {fmt!r}")
    return out


#: A tiny MELD release: (split, Dialogue_ID, Utterance_ID, speaker, emotion, utterance). Rows are
#: written in this order: train dialogue 0 is out of Utterance_ID order in the file and skips
#: utterance 2, every split has a dialogue 0 (ids must still be unique), and the test split's
#: apostrophe is written as the bare cp1252 byte 0x92 that real copies of MELD contain.
MELD_ROWS: tuple[tuple[str, int, int, str, str, str], ...] = (
    ("train", 0, 1, "Ross", "joy", "We were on a break!"),
    ("train", 0, 0, "Rachel", "anger", "You slept with her?"),
    ("train", 0, 3, "Rachel", "sadness", "I can not believe it."),
    ("train", 1, 0, "Joey", "neutral", "How you doin?"),
    ("train", 1, 1, "Phoebe", "surprise", "Oh my God."),
    ("dev", 0, 0, "Monica", "disgust", "That is gross."),
    ("dev", 0, 1, "Chandler", "fear", "Could this BE any scarier?"),
    ("test", 0, 0, "Chandler", "neutral", "I\x92m fine."),
    ("test", 0, 1, "Joey", "joy", "Pizza!"),
)


def make_meld_tree(root: Path, rows: tuple[tuple[str, int, int, str, str, str], ...] = MELD_ROWS) -> Path:
    """Write ``{train,dev,test}_sent_emo.csv`` with MELD's columns; returns the folder."""
    root = Path(root) / "meld"
    root.mkdir(parents=True, exist_ok=True)
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    for split in ("train", "dev", "test"):
        lines = [header.encode()]
        for n, (_s, dia, utt, speaker, emotion, text) in enumerate(r for r in rows if r[0] == split):
            cells = [str(n + 1), '"' + text.replace('"', '""') + '"', speaker, emotion, "neutral", str(dia), str(utt), "1", "1",
                     '"00:00:01,000"', '"00:00:02,000"']  # fmt: skip
            # U+0092 in MELD_ROWS stands for the bare byte 0x92, which is not valid UTF-8
            lines.append(",".join(cells).encode("utf-8").replace("\x92".encode(), b"\x92") + b"\n")
        (root / f"{split}_sent_emo.csv").write_bytes(b"".join(lines))
    return root


# --- ASED ---------------------------------------------------------------------------------


def ased_name(letter: str, sentence: int, speaker: int, *, rep: int = 1, gender: int = 1) -> str:
    from emovox.corpora.ased import FOLDERS

    return f"{letter}{FOLDERS[letter.lower()][1]}-{sentence:02d}-{rep:02d}-{gender:02d}-{speaker:02d}.wav"


def make_ased_tree(root: Path, speakers: tuple[int, ...] = (1, 2), *, seconds: float = 0.2) -> Path:
    """Per speaker: sentences 01 and 03 in each of the five emotions, in the release's folders; plus one
    file with a capital letter (as the release has) and a README that readers must ignore."""
    from emovox.corpora.ased import FOLDERS
    from emovox.labels import ASED_CODES

    base = Path(root) / "ASED"
    for speaker in speakers:
        for letter, folder in FOLDERS.items():
            for sentence in (1, 3):
                write_tone(base / folder / ased_name(letter, sentence, speaker), seconds, freq=LABEL_TONES[ASED_CODES[letter]])
    write_tone(base / FOLDERS["s"] / ased_name("S", 2, speakers[0], rep=2), seconds, freq=LABEL_TONES["sad"])
    (base / "README.md").write_text("ASED v1\n")
    return base


# --- pseudo-corpora from real EmoDB clips -------------------------------------------------------
# Several corpora with real speech (``make_pseudo_corpora``; the ``pseudo_corpora`` fixture of conftest.py builds
# them once per session): multi-corpus runs, protocols, per-corpus reports, and per-speaker statistics.

#: Three corpora made of real EmoDB clips, each in another layout, rate and vocabulary:
#: ``alpha`` a CSV manifest at 8 kHz with the short label forms (anger, joy, sadness, neutral, fear)
#: and transcripts that give the label away; ``beta`` a RAVDESS folder at 48 kHz whose calm is EmoDB's
#: bored; ``gamma`` an ASED folder at 16 kHz without happy. Speakers are different EmoDB speakers;
#: ``alpha`` and ``gamma`` both number theirs 01, 02 (two corpora, the same speaker ids, other people).
#: Value: (EmoDB speakers, EmoDB emotion letters).
PSEUDO_CORPORA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alpha": (("03", "08"), ("W", "F", "T", "N", "A")),
    "beta": (("11", "13", "14"), ("W", "F", "T", "N", "A", "L")),
    "gamma": (("15", "16", "12"), ("W", "T", "N", "A")),
}
#: Clips per (speaker, emotion), and seconds kept of each (its start; 1.0-1.3 s): small, so runs stay fast.
PSEUDO_CLIPS = 2
PSEUDO_SECONDS = 1.0
#: alpha's label words and transcripts (the words name the emotion: the text-only control must catch it).
ALPHA_WORDS = {"W": "anger", "F": "joy", "T": "sadness", "N": "neutral", "A": "fear"}
ALPHA_TEXTS = {"W": "I am furious with you", "F": "what a wonderful day", "T": "I miss her so much",
               "N": "the train leaves at nine", "A": "please do not hurt me"}  # fmt: skip
_RAVDESS_EMOTION = {"N": 1, "L": 2, "F": 3, "T": 4, "W": 5, "A": 6}
_ASED_LETTER = {"N": "n", "A": "f", "F": "h", "T": "s", "W": "a"}


def _emodb_clip(emodb: Path, stem: str, rate: int) -> np.ndarray:
    import soxr

    audio, sr = sf.read(str(emodb / "wav" / f"{stem}.wav"), dtype="float32")
    audio = audio[: int((PSEUDO_SECONDS + 0.1 * (sum(map(ord, stem)) % 4)) * sr)]
    return soxr.resample(audio, sr, rate).astype(np.float32) if rate != sr else audio


def make_pseudo_corpora(emodb: Path, root: Path) -> dict[str, str]:
    """Write the three ``PSEUDO_CORPORA`` under ``root`` from the EmoDB copy ``emodb``; their specs by name."""
    stems = sorted(p.stem for p in (Path(emodb) / "wav").glob("*.wav"))
    root = Path(root)
    picked = {
        name: [(i, spk, letter, k, stem)
               for i, spk in enumerate(speakers, start=1) for letter in letters
               for k, stem in enumerate([s for s in stems if s[:2] == spk and s[5] == letter][:PSEUDO_CLIPS])]
        for name, (speakers, letters) in PSEUDO_CORPORA.items()
    }  # fmt: skip
    rows = []
    for i, _spk, letter, k, stem in picked["alpha"]:
        rel = f"clips/{stem}.wav"
        (root / "alpha" / "clips").mkdir(parents=True, exist_ok=True)
        sf.write(str(root / "alpha" / rel), _emodb_clip(emodb, stem, 8000), 8000)
        rows.append({"id": stem, "path": rel, "label": ALPHA_WORDS[letter], "speaker": f"{i:02d}",
                     "text": f"{ALPHA_TEXTS[letter]} {k}"})  # fmt: skip
    alpha = root / "alpha" / "alpha.csv"
    with alpha.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "label", "speaker", "text"])
        w.writeheader()
        w.writerows(rows)
    for i, _spk, letter, k, stem in picked["beta"]:
        name = ravdess_name(_RAVDESS_EMOTION[letter], i, statement=1 + k % 2, rep=1 + k)
        path = root / "beta" / f"Actor_{i:02d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _emodb_clip(emodb, stem, 48_000), 48_000)
    for i, _spk, letter, k, stem in picked["gamma"]:
        from emovox.corpora.ased import FOLDERS

        ased = _ASED_LETTER[letter]
        path = root / "gamma" / FOLDERS[ased] / ased_name(ased, 1 + k % 2, i, rep=1 + k // 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _emodb_clip(emodb, stem, 16_000), 16_000)
    return {"alpha": f"manifest:{alpha}", "beta": f"ravdess:{root / 'beta'}?name=beta", "gamma": f"ased:{root / 'gamma'}?name=gamma"}

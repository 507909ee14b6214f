"""Emotion label names and per-corpus label mappings.

Every corpus names its emotions differently (IEMOCAP ``ang``, RAVDESS ``05``, EmoDB ``W``,
MEACorpus ``anger``). Readers map them onto one vocabulary of English names so that metrics,
reports and recognizers speak the same language across corpora. The corpus's own code is kept
on each utterance as ``corpus_label`` so nothing is lost.
"""

from __future__ import annotations

# Canonical names used across emovox.
ANGRY = "angry"
HAPPY = "happy"
NEUTRAL = "neutral"
SAD = "sad"
EXCITED = "excited"
FRUSTRATED = "frustrated"
FEARFUL = "fearful"
DISGUSTED = "disgusted"
SURPRISED = "surprised"
CALM = "calm"
BORED = "bored"
OTHER = "other"

#: IEMOCAP EmoEvaluation codes -> canonical names. ``xxx`` (no majority) is never a label.
IEMOCAP_CODES: dict[str, str] = {
    "ang": ANGRY,
    "hap": HAPPY,
    "exc": EXCITED,
    "neu": NEUTRAL,
    "sad": SAD,
    "fru": FRUSTRATED,
    "fea": FEARFUL,
    "dis": DISGUSTED,
    "sur": SURPRISED,
    "oth": OTHER,
}

#: The label sets the IEMOCAP literature uses, in a fixed order (the order of the report rows).
IEMOCAP_LABEL_SETS: dict[str, tuple[str, ...]] = {
    "4": (ANGRY, HAPPY, NEUTRAL, SAD),
    "6": (ANGRY, HAPPY, NEUTRAL, SAD, EXCITED, FRUSTRATED),
    "all": (ANGRY, HAPPY, NEUTRAL, SAD, EXCITED, FRUSTRATED, FEARFUL, DISGUSTED, SURPRISED, OTHER),
}

#: RAVDESS filename emotion field (third field) -> canonical names.
RAVDESS_CODES: dict[str, str] = {
    "01": NEUTRAL,
    "02": CALM,
    "03": HAPPY,
    "04": SAD,
    "05": ANGRY,
    "06": FEARFUL,
    "07": DISGUSTED,
    "08": SURPRISED,
}
RAVDESS_LABELS: tuple[str, ...] = tuple(RAVDESS_CODES.values())

#: EmoDB filename emotion letter (German initial) -> canonical names.
EMODB_CODES: dict[str, str] = {
    "W": ANGRY,  # Wut
    "L": BORED,  # Langeweile
    "E": DISGUSTED,  # Ekel
    "A": FEARFUL,  # Angst
    "F": HAPPY,  # Freude
    "T": SAD,  # Trauer
    "N": NEUTRAL,
}
EMODB_LABELS: tuple[str, ...] = (ANGRY, BORED, DISGUSTED, FEARFUL, HAPPY, NEUTRAL, SAD)

#: EmoSPeech 2024 / Spanish MEACorpus 2023 label names -> canonical names.
MEACORPUS_CODES: dict[str, str] = {
    "neutral": NEUTRAL,
    "disgust": DISGUSTED,
    "anger": ANGRY,
    "joy": HAPPY,
    "sadness": SAD,
    "fear": FEARFUL,
}
MEACORPUS_LABELS: tuple[str, ...] = (ANGRY, DISGUSTED, FEARFUL, HAPPY, NEUTRAL, SAD)

#: MELD's emotion words -> canonical names.
MELD_CODES: dict[str, str] = {
    "neutral": NEUTRAL,
    "joy": HAPPY,
    "surprise": SURPRISED,
    "anger": ANGRY,
    "sadness": SAD,
    "disgust": DISGUSTED,
    "fear": FEARFUL,
}
MELD_LABELS: tuple[str, ...] = (ANGRY, DISGUSTED, FEARFUL, HAPPY, NEUTRAL, SAD, SURPRISED)

#: ASED file-name emotion letter -> canonical names (``n1-01-01-01-01.wav``; one file of the release
#: has a capital ``S``, so letters are read case-insensitively).
ASED_CODES: dict[str, str] = {"n": NEUTRAL, "f": FEARFUL, "h": HAPPY, "s": SAD, "a": ANGRY}
#: In the order of the release's folders (01Neutral ... 05Angry).
ASED_LABELS: tuple[str, ...] = (NEUTRAL, FEARFUL, HAPPY, SAD, ANGRY)

# --- one vocabulary ------------------------------------------------------------------------

#: emovox's canonical names. They stay the long forms (``fearful``, not ``fear``): saved
#: recognizers, every recipe and emotion2vec's label names use them.
CANONICAL: tuple[str, ...] = (
    ANGRY, HAPPY, NEUTRAL, SAD, FEARFUL, DISGUSTED, SURPRISED, CALM, BORED, EXCITED, FRUSTRATED, OTHER,
)  # fmt: skip

#: Other words for the canonical classes (the short forms of EmoBox, MELD, MEACorpus and most
#: papers: fear, disgust, surprise, anger, joy, sadness, ...). Accepted wherever a user writes a label
#: name (a spec's ``labels=``, the config's ``labels:`` section, a manifest's label column).
ALIASES: dict[str, str] = {
    "anger": ANGRY,
    "joy": HAPPY,
    "happiness": HAPPY,
    "neutrality": NEUTRAL,
    "sadness": SAD,
    "fear": FEARFUL,
    "disgust": DISGUSTED,
    "surprise": SURPRISED,
    "calmness": CALM,
    "boredom": BORED,
    "excitement": EXCITED,
    "frustration": FRUSTRATED,
}


def canonical_label(name: str) -> str:
    """The canonical name of ``name`` (any case; ``fear`` -> ``fearful``, ``Anger`` -> ``angry``).

    A word that is neither a canonical name nor an alias is returned unchanged: manifests may use
    labels of their own (``positive``, ``high``), which keep working as before.
    """
    key = str(name).strip().lower()
    if key in CANONICAL:
        return key
    return ALIASES.get(key, str(name))

"""Label words (verbalizers): which word stands for each emotion label, and its token ids.

The class distribution of an LLM classifier is the softmax over the label words' *first*
tokens at the answer position (the paper's "logit selector"; OpenPrompt's manual
verbalizer). That only works if no two label words start with the same token, which depends
on the tokenizer ("frustration" and "fear" may both start with "f" in a small vocabulary), so
the check runs on the actual tokenizer and names the colliding words.

The default words are the paper's nouns (neutral, disgust, anger, joy, sadness, fear) for
emovox's canonical labels, in English, Spanish and German; ``label_words`` overrides any of
them, and a label set with labels outside the table must name its words there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from emovox.errors import LLMError

#: Canonical emovox label -> label word, per language.
LABEL_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "angry": "anger", "happy": "joy", "sad": "sadness", "fearful": "fear", "disgusted": "disgust",
        "surprised": "surprise", "neutral": "neutral", "calm": "calm", "bored": "boredom",
        "excited": "excitement", "frustrated": "frustration", "other": "other",
    },
    "es": {
        "angry": "enojo", "happy": "alegría", "sad": "tristeza", "fearful": "miedo", "disgusted": "asco",
        "surprised": "sorpresa", "neutral": "neutral", "calm": "calma", "bored": "aburrimiento",
        "excited": "entusiasmo", "frustrated": "frustración", "other": "otro",
    },
    "de": {
        "angry": "Wut", "happy": "Freude", "sad": "Trauer", "fearful": "Angst", "disgusted": "Ekel",
        "surprised": "Überraschung", "neutral": "neutral", "calm": "Ruhe", "bored": "Langeweile",
        "excited": "Aufregung", "frustrated": "Frust", "other": "anderes",
    },
}


def label_words(labels: Sequence[str], language: str = "en", overrides: Mapping[str, str] | None = None) -> list[str]:
    """One word per label, in label order: ``overrides`` first, then the language's table."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(labels))
    if unknown:
        raise LLMError(f"label_words names labels {unknown} that are not in the label set {list(labels)}")
    table = LABEL_WORDS.get(language)
    if table is None and len(overrides) < len(labels):
        raise LLMError(
            f"no built-in label words for language '{language}' (built in: {', '.join(sorted(LABEL_WORDS))}); "
            "give every label's word in label_words"
        )
    words = []
    for label in labels:
        word = overrides.get(label) or (table or {}).get(label)
        if not word or not str(word).strip():
            raise LLMError(
                f"label '{label}' has no label word for language '{language}'; set label_words: {{{label}: WORD}}"
            )
        words.append(str(word).strip())
    seen: dict[str, str] = {}
    for label, word in zip(labels, words, strict=True):
        if word.lower() in seen:
            raise LLMError(f"labels '{seen[word.lower()]}' and '{label}' have the same label word '{word}'")
        seen[word.lower()] = label
    return words


@dataclass(frozen=True)
class Verbalizer:
    """Label words with their token ids as the model sees them after the prompt."""

    labels: tuple[str, ...]
    words: tuple[str, ...]
    separator: str  # what precedes the word after the prompt ("" or " ")
    token_ids: tuple[tuple[int, ...], ...]  # every token of separator + word

    @property
    def first_ids(self) -> list[int]:
        return [ids[0] for ids in self.token_ids]

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "words": list(self.words), "separator": self.separator,
                "token_ids": [list(t) for t in self.token_ids]}


def build_verbalizer(labels: Sequence[str], words: Sequence[str], tokenizer, separator: str) -> Verbalizer:
    """Tokenise each label word as it follows the prompt and check the first tokens are distinct."""
    token_ids = []
    for label, word in zip(labels, words, strict=True):
        ids = tokenizer(separator + word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise LLMError(f"label word {word!r} (label '{label}') encodes to no tokens")
        token_ids.append(tuple(int(i) for i in ids))
    by_first: dict[int, list[int]] = {}
    for index, ids in enumerate(token_ids):
        by_first.setdefault(ids[0], []).append(index)
    clashes = [group for group in by_first.values() if len(group) > 1]
    if clashes:
        parts = []
        for group in clashes:
            first = token_ids[group[0]][0]
            piece = tokenizer.convert_ids_to_tokens(first)
            names = " and ".join(f"'{words[i]}' ({labels[i]})" for i in group)
            parts.append(f"{names} all start with token {piece!r} (id {first})")
        raise LLMError(
            "label words must start with different tokens, because the class scores are the logits of each "
            f"word's first token, but with this tokenizer ({type(tokenizer).__name__}, {len(tokenizer)} tokens) "
            + "; ".join(parts)
            + ". Choose other words for these labels with label_words (e.g. a synonym or another part of speech)."
        )
    return Verbalizer(tuple(labels), tuple(words), separator, tuple(token_ids))

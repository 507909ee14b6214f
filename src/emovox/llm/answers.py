"""Map an LLM's free-text answer to a label (zero-shot), counting the answers it cannot map.

Instruction-tuned LLMs rarely answer with exactly one of the offered words: "Joy.", "The
emotion is **anger**", "happiness", "She sounds scared", "alegría", "Freude". The paper
post-processed Qwen-Audio's answers and gave the predominant class ("neutral") to every answer
without a recognisable emotion; emovox does the same, and reports how many answers fell back,
because a zero-shot score with many fallbacks measures the parser as much as the model.

How an answer is read:

- case, accents and punctuation are normalised ("Alegría!" -> "alegria");
- words are matched against a lexicon of emotion words per canonical label in English,
  Spanish, German, French and Italian (nouns, adjectives, adverbs, participles), plus the
  label words and label names in use;
- a word repeated without spaces (``joyjoyjoy``, what a model trained without an end token
  generates) is read once;
- plurals and inflections are reduced before lookup: English plural/comparative/superlative and
  -ly ("happier", "fears"), Spanish gender and number ("enojadas"), German adjective endings
  ("traurige");
- a match negated in its clause ("not angry", "no es miedo", "nicht traurig") is skipped, and
  "no emotion" means neutral;
- the first remaining match in the answer wins; an emotion outside the label set maps to a
  related label only where the literature merges them (excited -> happy, as IEMOCAP's 4-class
  set does), else the next match is tried;
- nothing found: ``None``, which the caller turns into the fallback label and counts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Canonical label -> emotion words (already normalised: lower case, no accents).
LEXICON: dict[str, tuple[str, ...]] = {
    "angry": (
        "anger", "angry", "angrily", "angered", "mad", "furious", "fury", "rage", "raging", "enraged", "irritated",
        "irritation", "annoyed", "annoyance", "irate", "outraged", "outrage", "hostile", "hostility", "wrath",
        "enojo", "enojado", "enfado", "enfadado", "ira", "rabia", "furioso", "furia", "colera", "molesto", "cabreado",
        "wut", "wutend", "zorn", "zornig", "arger", "argerlich", "verargert", "colereux", "fache", "rabbia",
        "arrabbiato",
    ),
    "happy": (
        "happy", "happiness", "happily", "joy", "joyful", "joyous", "joyfully", "glad", "gladness", "delighted",
        "delight", "cheerful", "cheer", "pleased", "elated", "amused", "amusement", "merry", "alegria", "alegre",
        "feliz", "felicidad", "contento", "gozo", "dicha", "freude", "glucklich", "frohlich", "froh", "heiter",
        "joie", "heureux", "heureuse", "gioia", "felice",
    ),
    "sad": (
        "sad", "sadness", "sadly", "unhappy", "unhappiness", "sorrow", "sorrowful", "grief", "grieving", "depressed",
        "depression", "melancholy", "melancholic", "gloomy", "heartbroken", "despair", "tristeza", "triste", "pena",
        "melancolia", "trauer", "traurig", "traurigkeit", "betrubt", "tristesse", "tristezza",
    ),
    "fearful": (
        "fear", "fearful", "fearfully", "afraid", "scared", "scary", "frightened", "fright", "terrified", "terror",
        "anxious", "anxiety", "nervous", "worried", "worry", "panic", "panicked", "horror", "horrified", "miedo",
        "temor", "asustado", "aterrado", "aterrorizado", "ansiedad", "panico", "angst", "angstlich", "furcht",
        "verangstigt", "peur", "effraye", "paura", "spaventato",
    ),
    "disgusted": (
        "disgust", "disgusted", "disgusting", "revulsion", "repulsed", "repulsion", "revolted", "loathing",
        "repugnance", "asco", "asqueado", "repugnancia", "disgusto", "ekel", "angeekelt", "ekelhaft", "degout",
        "degoute", "disgustato",
    ),
    "surprised": (
        "surprise", "surprised", "surprising", "astonished", "astonishment", "amazed", "amazement", "shocked",
        "shock", "startled", "sorpresa", "sorprendido", "asombro", "asombrado", "uberraschung", "uberrascht",
        "erstaunt", "surpris", "sorpreso",
    ),
    "neutral": ("neutral", "neutrality", "indifferent", "indifference", "none", "neutro", "neutra", "neutre", "neutrale"),
    "calm": ("calm", "calmness", "relaxed", "serene", "peaceful", "tranquil", "calma", "tranquilo", "sereno", "ruhe",
             "ruhig", "gelassen", "calme"),
    "bored": ("bored", "boredom", "boring", "tedium", "aburrimiento", "aburrido", "langeweile", "gelangweilt",
              "ennui", "noia", "annoiato"),
    "excited": ("excited", "excitement", "exciting", "enthusiastic", "enthusiasm", "thrilled", "emocionado",
                "entusiasmo", "entusiasmado", "aufregung", "aufgeregt", "begeistert", "eccitato"),
    "frustrated": ("frustrated", "frustration", "frustrating", "frustracion", "frustrado", "frust", "frustriert"),
    "other": ("other", "otro", "otra", "anderes", "andere"),
}

#: An emotion outside the label set counts as this label when present (IEMOCAP merges exc into hap).
RELATED: dict[str, str] = {"excited": "happy"}

_NEGATIONS = frozenset({
    "not", "no", "never", "nor", "neither", "without", "isn", "wasn", "aren", "weren", "doesn", "don", "didn",
    "hardly", "nicht", "kein", "keine", "keinen", "keiner", "nie", "nunca", "sin", "ni", "pas", "jamais", "non",
})
_NEUTRAL_PHRASES = frozenset({"emotion", "emotions", "particular", "clear", "specific", "strong", "emocion"})
_TOKEN = re.compile(r"[a-z]+|[.,;:!?()\[\]\n/|]")
_CLAUSE = frozenset(".,;:!?()[]\n/|")
#: Contrast words end a negation's scope ("not happy but scared" is scared).
_CONTRAST = frozenset({"but", "though", "although", "rather", "instead", "pero", "sino", "aber", "sondern", "mais", "ma"})


def normalize(text: str) -> str:
    """Lower case, no accents (``alegría`` -> ``alegria``, ``Überraschung`` -> ``uberraschung``), ß -> ss."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _period(token: str) -> str:
    """``angerangeranger`` -> ``anger``: a model trained without an end token repeats its word."""
    for p in range(3, len(token) // 2 + 1):
        if len(token) % p == 0 and token == token[:p] * (len(token) // p):
            return token[:p]
    return token


def _variants(token: str) -> Iterable[str]:
    """The token and its plausible base forms (repetition, plural, comparative, gender, German endings)."""
    yield token
    token = _period(token)
    yield token
    n = len(token)
    rules = []
    if token.endswith("ies"):
        rules.append(token[:-3] + "y")
    if token.endswith("iest"):
        rules.append(token[:-4] + "y")
    if token.endswith("ier"):
        rules.append(token[:-3] + "y")
    for suffix in ("es", "s", "est", "er", "ly", "en", "em", "e"):
        # plurals may leave 3 letters ("joys"); other endings need 4 ("made" is not "mad")
        if token.endswith(suffix) and n - len(suffix) >= (3 if suffix in ("s", "es") else 4):
            stem = token[: -len(suffix)]
            rules.append(stem)
            if len(stem) >= 4 and stem[-1] == stem[-2]:  # sadder -> sadd -> sad
                rules.append(stem[:-1])
    for ending, base in (("as", "o"), ("os", "o"), ("a", "o")):  # enojadas, asustados, enojada -> enojado
        if token.endswith(ending) and n - len(ending) >= 3:
            rules.append(token[: -len(ending)] + base)
    yield from rules


@dataclass(frozen=True)
class ParsedAnswer:
    label: str | None  # None: nothing recognisable (the caller falls back)
    word: str | None  # the answer word that decided it


class AnswerParser:
    """Reads answers for one label set; ``words`` adds the label words in use (any language)."""

    def __init__(self, labels: Sequence[str], words: Mapping[str, Iterable[str]] | None = None):
        self.labels = list(labels)
        self._lookup: dict[str, str] = {}
        for concept, forms in LEXICON.items():
            for form in forms:
                self._lookup.setdefault(form, concept)
        # the label set's own names and words win over the lexicon (custom label sets included)
        for label in self.labels:
            extra = [label, *((words or {}).get(label, ()))]
            for w in extra:
                for token in _TOKEN.findall(normalize(w)):
                    if token not in _CLAUSE and len(token) >= 2:
                        self._lookup[token] = label

    def _to_label(self, concept: str) -> str | None:
        if concept in self.labels:
            return concept
        related = RELATED.get(concept)
        return related if related in self.labels else None

    def parse(self, answer: str | None) -> ParsedAnswer:
        tokens = _TOKEN.findall(normalize(answer or ""))
        for i, token in enumerate(tokens):
            if token in _CLAUSE:
                continue
            if token == "no" and i + 1 < len(tokens) and tokens[i + 1] in _NEUTRAL_PHRASES and "neutral" in self.labels:
                return ParsedAnswer("neutral", "no " + tokens[i + 1])
            concept = next((self._lookup[v] for v in _variants(token) if v in self._lookup), None)
            if concept is None or self._negated(tokens, i):
                continue
            label = self._to_label(concept)
            if label is not None:
                return ParsedAnswer(label, token)
        return ParsedAnswer(None, None)

    @staticmethod
    def _negated(tokens: list[str], i: int) -> bool:
        for j in range(i - 1, max(i - 4, -1), -1):
            if tokens[j] in _CLAUSE or tokens[j] in _CONTRAST:
                return False
            if tokens[j] in _NEGATIONS:
                return True
        return False


@dataclass
class ZeroShotAnswers:
    """Generated answers mapped to label indices, with the fallbacks counted."""

    answers: list[str]
    predictions: list[int]
    parsed: list[ParsedAnswer]
    fallback: str

    @property
    def unparsed(self) -> int:
        return sum(p.label is None for p in self.parsed)

    def summary(self) -> dict:
        n = len(self.answers)
        return {"answers": n, "unparsed": self.unparsed, "unparsed_fraction": self.unparsed / n if n else 0.0,
                "fallback": self.fallback}


def map_answers(answers: Sequence[str], parser: AnswerParser, fallback: str) -> ZeroShotAnswers:
    if fallback not in parser.labels:
        from emovox.errors import LLMError

        raise LLMError(f"zero-shot fallback label '{fallback}' is not in the label set {parser.labels}")
    parsed = [parser.parse(a) for a in answers]
    index = {label: i for i, label in enumerate(parser.labels)}
    predictions = [index[p.label if p.label is not None else fallback] for p in parsed]
    return ZeroShotAnswers(list(answers), predictions, parsed, fallback)

"""Corpus readers: one spec string -> one ``Corpus`` of ``Utterance`` records.

``load_corpus("FORMAT:PATH?option=value&option=value")`` is the single entry point used by the
CLI, recipes and Python code. Unknown formats or options raise ``CorpusError`` listing the valid
ones. Formats and their options:

``iemocap:PATH`` -- the official release (PATH holds Session1 ... Session5).
    ``labels=4|6|all`` (default 4: angry, happy, neutral, sad; 6 adds excited and frustrated;
    all keeps every code except xxx). ``merge_exc=true|false`` merges excited into happy
    (default true for labels=4, false otherwise). ``on_missing_audio=error|skip`` (default error).
    Example: ``iemocap:/data/IEMOCAP?labels=4&merge_exc=false``.

``ravdess:PATH`` -- RAVDESS audio (``Actor_XX/MM-VC-EE-II-SS-RR-AA.wav``).
    ``channel=speech|song|both`` (default speech). ``labels=a,b,...`` keeps only these labels in
    this order, e.g. ``labels=neutral,happy,sad,angry``.

``emodb:PATH`` -- EmoDB (``wav/SSTTTEV.wav``). ``labels=a,b,...`` as above.

``ased:PATH`` -- ASED, Amharic (``0NEmotion/xN-SS-RR-GG-PP.wav``). ``sentences=01,02`` keeps only
    these sentences (``common`` = 01,02, the two texts read in every emotion; default all, whose
    sentences 03-07 give the label away by their words), ``labels=a,b,...`` as above.

``meacorpus:PATH`` -- Spanish MEACorpus 2023 / EmoSPeech 2024; PATH is the release folder or its
    table. ``csv=`` (the table inside PATH; default the only one), ``audio_dir=`` (default the
    first existing of audio, audios, wav, wavs, segments), ``id_col=id``,
    ``text_col=transcription``, ``label_col=label``, ``path_col=`` (a column with the audio file
    name instead of ``<id><ext>``), ``speaker_col=`` (none in the release: every speaker is
    ``unknown``), ``audio_ext=auto|.wav|...``, ``labels=a,b,...``, ``on_missing_audio=error|skip``.

``meld:PATH`` -- MELD transcripts, text only (PATH holds ``train_sent_emo.csv``, ``dev_sent_emo.csv``,
    ``test_sent_emo.csv``). Ids ``train/dia12_utt3``; ``session`` is the official split (train, dev,
    test: the ``official`` protocol), ``dialogue``/``turn`` order each dialogue so ``Corpus.previous``
    is the context; no audio. ``splits=train,dev,test`` (default all) reads only these splits;
    ``labels=a,b,...`` as above (emovox names, or MELD's: joy, surprise, anger, sadness, disgust,
    fear, neutral). Example: ``meld:/data/MELD?labels=neutral,joy,sadness,anger``.

``manifest:PATH`` -- a CSV, TSV or JSONL table with ``path,label`` and optional ``id,
    corpus_label, text, speaker, session, dialogue, turn, start, end, cut``; relative paths are
    relative to the manifest. ``labels=a,b,...`` fixes the label order (default: sorted) and
    leaves out rows with other labels. ``on_missing_audio=error|skip``.

Every format also takes ``name=NAME``: the corpus's name in a run over several corpora (default the
format's name, or a manifest's file name), e.g. ``manifest:a.csv?name=studio``.

Corpora without speaker information use the speaker ``unknown`` (``UNKNOWN_SPEAKER``) for every
utterance, so speaker-independent splits refuse them instead of leaking speakers silently.

Labels are emovox's canonical names (``emovox.labels``; aliases such as ``fear`` or ``anger`` are
accepted wherever a label is named). ``load_corpora([spec, spec, ...], LabelPolicy(...))`` reads
several corpora as one (``emovox.corpora.pool``): one label set, ids and speakers ``<corpus>/<id>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from emovox.corpora import ased, emodb, iemocap, manifest, meacorpus, meld, ravdess
from emovox.corpora.base import Corpus, Utterance
from emovox.corpora.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest
from emovox.corpora.pool import LabelPolicy, apply_labels, corpus_sources, label_table, pool, shared_labels
from emovox.corpora.spec import NAME_OPTION, UNKNOWN_SPEAKER, CorpusSpec, Option, Reader, parse_spec, resolve_options
from emovox.errors import CorpusError

#: Every corpus format, by the name used before the colon of a spec.
READERS: dict[str, Reader] = {
    r.name: r
    for r in (iemocap.READER, ravdess.READER, emodb.READER, ased.READER, meacorpus.READER, meld.READER, manifest.READER)
}


def load_corpus(spec: str) -> Corpus:
    """Read the corpus a ``FORMAT:PATH?options`` spec names (formats and options: module docstring).

    Every utterance carries the corpus's name (``Utterance.corpus``): ``?name=``, else the reader's.
    """
    parsed = parse_spec(spec)
    reader = READERS.get(parsed.format)
    if reader is None:
        raise CorpusError(f"unknown corpus format {parsed.format!r} in {spec!r}; valid formats: {', '.join(sorted(READERS))}")
    options = resolve_options(parsed, (*reader.options, NAME_OPTION))
    name = options.pop("name")
    corpus = reader.read(parsed.path, spec=parsed.text, **options)
    name = name or corpus.name
    utterances = [u if u.corpus is not None else replace(u, corpus=name) for u in corpus.utterances]
    return Corpus(name, utterances, corpus.labels, corpus.spec, list(corpus.dropped))


def load_corpora(specs: str | Sequence[str], labels: LabelPolicy | None = None) -> Corpus:
    """One corpus from one spec or several (pooled: ``emovox.corpora.pool``), under a label policy.

    One spec with no policy is exactly ``load_corpus(spec)``.
    """
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise CorpusError("no corpus given; corpus: takes a spec or a list of specs")
    return pool(apply_labels([load_corpus(s) for s in specs], labels))


__all__ = [
    "Corpus",
    "CorpusSpec",
    "LabelPolicy",
    "MANIFEST_COLUMNS",
    "Option",
    "READERS",
    "Reader",
    "UNKNOWN_SPEAKER",
    "Utterance",
    "corpus_sources",
    "label_table",
    "load_corpora",
    "load_corpus",
    "parse_spec",
    "read_manifest",
    "shared_labels",
    "write_manifest",
]

"""Evaluation protocols: which utterances train, validate and test each fold.

A number in an SER paper means little without its protocol: the same model scores very
differently when a test speaker was also heard in training. So every protocol here is named
by the promise it makes, and ``make_folds`` *proves* that promise on the corpus at hand
(``check_folds``) instead of trusting the corpus layout: if IEMOCAP speaker ids were not
session-bound, leave-one-session-out would raise rather than silently leak.

Protocols (the ``protocol`` string):

``leave-one-session-out``
    One fold per session (IEMOCAP: 5). Speaker-independent when speakers are session-bound,
    which is checked. Needs ``Utterance.session``.
``speaker-groups:K`` (``speaker-groups:K:shuffle``)
    Speakers in natural order (``2`` < ``10``) are cut into K contiguous groups whose sizes
    differ by at most one; each group is one fold's test set. Contiguous, not round-robin,
    because corpora number speakers in a pattern (RAVDESS: odd actors male, even female), so
    RAVDESS ``speaker-groups:6`` gives 4 actors (2 male, 2 female) per group, while round-robin
    would give all-male groups. With ``:shuffle`` the order is a ``seed``-ed permutation.
``leave-one-speaker-out``
    ``speaker-groups:K`` with K = number of speakers (EmoDB: 10 folds).
``stratified:K``
    scikit-learn ``StratifiedKFold(K, shuffle=True, random_state=seed)`` over utterances, as
    the EmoSPeech paper did. NOT speaker-independent.
``holdout:FRACTION``
    One fold: scikit-learn ``train_test_split(test_size=FRACTION, stratify=labels,
    random_state=seed)``, as the RAVDESS voting paper's 80:20 split. NOT speaker-independent,
    and its test set covers only FRACTION of the corpus.
``official``
    One fold: the corpus's own published split, read from ``Utterance.session``: ``train``
    trains, ``dev`` (or ``valid``/``validation``) validates, ``test`` tests (MELD: 9,989 / 1,109 /
    2,610). Corpora whose sessions are not exactly these three parts (IEMOCAP's Session1-5, or
    none) are refused. NOT speaker-independent: the official splits of MELD share their main
    characters, and the protocol promises nothing about speakers. Validation is always the
    official dev part (``paper`` is refused: it would select on the test part the corpus's
    authors kept apart).

Protocols over several corpora (``corpus:`` a list of specs; each utterance's ``Utterance.corpus``):

``leave-one-corpus-out``
    One fold per corpus: it is the test part, never seen in training or validation; the other
    corpora train. Corpus-independent and speaker-independent (both checked).
``cross-corpus:TRAIN[:TEST]``
    One fold: the corpora named in TRAIN (``+``-joined, e.g. ``emodb+ased``) train, those in TEST
    (default: every other corpus) are tested once. Every corpus of the run must be in one of the
    two. With several test corpora the report breaks the figures down per corpus.
``in-corpus:K``
    Each corpus cut into K speaker groups (as ``speaker-groups:K``); a fold trains and validates on
    its own corpus only, so the run gives each corpus's in-corpus figure over the run's label set
    (the diagonal of the corpus matrix, ``emovox corpus matrix``).
``speaker-groups:K`` over several corpora
    Each corpus's speakers are cut into K groups of their own and group k of every corpus makes
    fold k, so every fold tests (and trains on) speakers of every corpus, not one corpus per group.

In the two corpus protocols, ``strict`` validation holds out a speaker group of every training
corpus (its speakers in natural order cut into ``VALID_GROUPS`` groups; fold k takes group k), so
choices are made on unheard voices of the corpora the model learns from, never on the test corpus.

Validation (the data early stopping and model selection look at):

``paper``
    ``valid`` is the test fold itself, as the IEMOCAP ensemble paper did. Optimistic: the
    reported score is the best epoch *on the test set*. Kept to reproduce published numbers.
``strict`` (default)
    The test fold is never seen before the final evaluation. For speaker-independent
    protocols a whole held-out unit is carved out of the training part: the next speaker group
    (fold k validates on group k+1, cyclically, so every group validates exactly once) or, for
    leave-one-session-out, the next whole session. A whole session rather than one of its two
    speakers, because IEMOCAP speakers share dialogues with their session partner: validating
    on one while training on the other lets the dialogue (and any context model) leak. It needs
    at least 3 groups/sessions. For ``stratified``/``holdout``, ``strict`` carves a seeded,
    stratified ``VALID_FRACTION`` of the training part (not speaker-independent, like the
    protocol itself); when a class is too rare to stratify, the carve-out is seeded but
    unstratified.

Fold ``index`` is 1-based, as printed in reports and as the ``fold_k`` directory names.

The package: ``protocols`` (``make_folds``: the protocol string -> folds, each builder above) and ``fold`` (``Fold``,
what a fold promises and its proof; ``check_folds``; ``write_folds``, the folds as JSONL).
"""

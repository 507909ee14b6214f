"""Shared test set-up: never reach the network, and find the shared assets beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per test process (set before numpy and torch start their thread pools; an explicit setting
# wins). The suite runs on two workers, one per core; a test of several threads sets them itself. Tiny
# ops on two threads of a busy machine wait on each other: a cross-entropy of 8 x 2 logits took 1.4-7.5 ms
# with 2 torch threads under load against 4 us with one (2026-12-06, this machine, load average ~8).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
from helpers import EMODB_SMALL_SPEAKERS, train_tiny  # noqa: E402

# Tests must never download from a hub: fail fast and clearly instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))
EMODB = SHARED / "data" / "emodb"
WHISPER_BASE = SHARED / "models" / "whisper-base"
MELD = SHARED / "data" / "meld"


def pytest_xdist_auto_num_workers(config):
    """How many pytest-xdist workers ``-n auto`` (pyproject's addopts) starts: one per core, at most
    ``--maxprocesses`` (2); none (this process) on one core, or when the command names test files or tests
    rather than folders, where starting workers would cost more than it saves."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    named = [a for a in config.args if not Path(a.split("::")[0]).is_dir()]
    if cores < 2 or (config.args and len(named) == len(config.args)):
        return 0
    return cores


#: Test modules that share a session fixture worth keeping on one pytest-xdist worker (the real Whisper-base
#: features of ``emodb_small``, in ``emodb_whisper_cache``).
XDIST_GROUPS = {"test_search_baseline.py": "emodb-whisper", "test_whisper_emodb.py": "emodb-whisper"}
#: Modules of many independent tests whose module fixtures are cheap: dealt over this many groups (workers) instead
#: of one (the tiny smoke run of every recipe: ~130 s of tests, its corpora built in a second per worker).
XDIST_SPREAD = {"test_recipes_index.py": 2}
#: The longest modules (30-90 s each on this machine), started first: a worker that takes one of them last keeps
#: the other waiting at the end of the run (xdist hands out groups in collection order).
LONG_FIRST = ("test_augment.py", "test_whisper_emodb.py", "test_search_baseline.py", "test_distributed.py",
              "test_fold_jobs.py", "test_combine.py", "test_web_demo.py", "test_profiling.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``, see pyproject.toml) each test module runs on one worker, so its
    module fixtures (a trained run, a server, a browser) are built once, and the modules of ``XDIST_GROUPS``
    share a worker, and those of ``XDIST_SPREAD`` are dealt over several. Runs before xdist reads the marks; without
    xdist the mark means nothing."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its own order
    dealt: dict[str, int] = {}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = XDIST_GROUPS.get(item.path.name, str(item.path.relative_to(REPO)))
            if item.path.name in XDIST_SPREAD:
                k = dealt[group] = dealt.get(group, -1) + 1
                group = f"{group}#{k % XDIST_SPREAD[item.path.name]}"
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test starts on one torch thread, whatever the test before it left (``emovox cv`` with
    ``train.threads`` unset takes every core and keeps them)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    if not (EMODB / "wav").is_dir():
        pytest.skip(f"EmoDB test copy not found at {EMODB} (set EMOVOX_SHARED to the shared/ folder)")
    return EMODB


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    if not (WHISPER_BASE / "config.json").is_file():
        pytest.skip(f"Whisper-base not found at {WHISPER_BASE} (set EMOVOX_SHARED to the shared/ folder)")
    return WHISPER_BASE


@pytest.fixture(scope="session")
def meld_dir() -> Path:
    if not (MELD / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD transcripts not found at {MELD} (set EMOVOX_SHARED to the shared/ folder)")
    return MELD


@pytest.fixture(scope="session")
def emodb_small(emodb_dir):
    """The EmoDB corpus restricted to ``EMODB_SMALL_SPEAKERS`` (116 clips)."""
    from emovox.corpora import load_corpus

    corpus = load_corpus(f"emodb:{emodb_dir}")
    return corpus.subset([u.id for u in corpus if u.speaker in EMODB_SMALL_SPEAKERS])


@pytest.fixture(scope="session")
def emodb_whisper_cache(tmp_path_factory) -> Path:
    """A feature cache shared by the real Whisper-base tests on ``emodb_small``: the clips' frozen features
    are computed by whichever test runs first and read back by the others (the cache is keyed by backbone,
    precision and clip, so sharing it changes no result)."""
    return tmp_path_factory.mktemp("emodb-whisper-cache")


# --- tiny trained recognizers, each built once per session on first use ----------------------------


@pytest.fixture(scope="session")
def audio_recognizer_dir(tmp_path_factory) -> Path:
    """A frozen tiny wav2vec2 probe on cached features, trained on the tone corpus."""
    return train_tiny(tmp_path_factory.mktemp("rec-audio"), "wav2vec2-base")


@pytest.fixture(scope="session")
def whisper_recognizer_dir(tmp_path_factory) -> Path:
    """A frozen tiny Whisper encoder with learned attention pooling (the backbone runs while training)."""
    return train_tiny(
        tmp_path_factory.mktemp("rec-whisper"), "whisper-base", pooling="attention", train={"max_epochs": 8, "lr": 0.02}
    )


@pytest.fixture(scope="session")
def text_recognizer_dir(tmp_path_factory) -> Path:
    """A transcript recognizer (tiny BERT)."""
    return train_tiny(tmp_path_factory.mktemp("rec-text"), "bert-base")


@pytest.fixture(scope="session")
def pseudo_corpora(emodb_dir, tmp_path_factory) -> dict[str, str]:
    """Three small corpora made of real EmoDB clips (``corpus_fixtures.make_pseudo_corpora``): their specs by name."""
    from corpus_fixtures import make_pseudo_corpora

    return make_pseudo_corpora(emodb_dir, tmp_path_factory.mktemp("pseudo-corpora"))

"""Corpora and folders that users link in: every reader reads a tree through symlinked folders as it reads the real one."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from corpus_fixtures import make_emodb_tree, make_iemocap_tree, make_manifest, make_meacorpus_tree, make_ravdess_tree

from emovox.corpora import load_corpus
from emovox.corpora.base import Corpus, files_under

if not hasattr(os, "symlink"):
    pytest.skip("this platform has no symlinks", allow_module_level=True)


def records(corpus: Corpus) -> list[dict]:
    """What a reader found, without the audio path (which differs by design: it is the linked one)."""
    return [{k: v for k, v in asdict(u).items() if k != "audio"} for u in corpus]


def same_corpus(linked: Corpus, real: Corpus, linked_root: Path) -> None:
    assert len(linked) == len(real) > 0
    assert records(linked) == records(real) and linked.labels == real.labels
    for u in linked:
        assert u.audio.is_file() and linked_root.resolve() in u.audio.parents  # found through the link, and readable


def test_ravdess_through_a_linked_speech_folder_and_a_loop(tmp_path: Path) -> None:
    real = make_ravdess_tree(tmp_path / "real", actors=(1, 2, 3))
    linked = tmp_path / "linked"
    linked.mkdir()
    # the case: the release's top folder linked in, under the name of the downloaded archive
    (linked / "Audio_Speech_Actors_01-24").symlink_to(real, target_is_directory=True)
    (real / "Actor_01" / "back_up").symlink_to(real, target_is_directory=True)  # a link back up the tree
    corpus = load_corpus(f"ravdess:{linked}")
    same_corpus(corpus, load_corpus(f"ravdess:{real}"), linked)
    assert len(corpus) == 24 and corpus.speakers == ["Actor_01", "Actor_02", "Actor_03"]


def test_ravdess_with_each_actor_linked_from_elsewhere(tmp_path: Path) -> None:
    real = make_ravdess_tree(tmp_path / "real", actors=(1, 2))
    linked = tmp_path / "linked"
    linked.mkdir()
    for actor in ("Actor_01", "Actor_02"):
        (linked / actor).symlink_to(real / actor, target_is_directory=True)
    same_corpus(load_corpus(f"ravdess:{linked}"), load_corpus(f"ravdess:{real}"), linked)


def test_emodb_with_a_linked_wav_folder(tmp_path: Path) -> None:
    real = make_emodb_tree(tmp_path / "real")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "wav").symlink_to(real / "wav", target_is_directory=True)
    same_corpus(load_corpus(f"emodb:{linked}"), load_corpus(f"emodb:{real}"), linked)


def test_iemocap_with_linked_sessions_and_audio(tmp_path: Path) -> None:
    real = make_iemocap_tree(tmp_path / "real", sessions=2)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "Session1").symlink_to(real / "Session1", target_is_directory=True)
    # Session2 assembled from links: its annotations and its audio live in different places
    (linked / "Session2").mkdir()
    (linked / "Session2" / "dialog").symlink_to(real / "Session2" / "dialog", target_is_directory=True)
    (linked / "Session2" / "sentences").mkdir()
    (linked / "Session2" / "sentences" / "wav").symlink_to(real / "Session2" / "sentences" / "wav", target_is_directory=True)
    same_corpus(load_corpus(f"iemocap:{linked}"), load_corpus(f"iemocap:{real}"), linked)


def test_meacorpus_with_a_linked_table_and_audio_folder(tmp_path: Path) -> None:
    real = make_meacorpus_tree(tmp_path / "real")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "train.csv").symlink_to(real / "train.csv")
    (linked / "audio").symlink_to(real / "audio", target_is_directory=True)
    same_corpus(load_corpus(f"meacorpus:{linked}"), load_corpus(f"meacorpus:{real}"), linked)
    # the linked table named directly: its audio is the folder beside the link, not beside its target
    (linked / "audio").unlink()
    shutil.move(real / "audio", linked / "audio")
    direct = load_corpus(f"meacorpus:{linked / 'train.csv'}")
    assert records(direct) == records(load_corpus(f"meacorpus:{linked}"))
    assert all(linked.resolve() in u.audio.parents for u in direct)


def test_manifest_beside_linked_audio_folders(tmp_path: Path) -> None:
    real = make_manifest(tmp_path / "real")
    linked = tmp_path / "linked"
    linked.mkdir()
    shutil.copy(real, linked / real.name)  # relative paths now resolve through the links below
    for folder in ("clips", "long"):
        (linked / folder).symlink_to(real.parent / folder, target_is_directory=True)
    same_corpus(load_corpus(f"manifest:{linked / real.name}"), load_corpus(f"manifest:{real}"), linked)


def test_predict_folders_follow_links(tmp_path: Path) -> None:
    from emovox.cli.inputs import expand_inputs

    real = make_emodb_tree(tmp_path / "real")
    linked = tmp_path / "linked"
    (linked / "more").mkdir(parents=True)
    (linked / "emodb").symlink_to(real / "wav", target_is_directory=True)
    (linked / "more" / "again").symlink_to(linked, target_is_directory=True)  # a loop: each real folder once
    jobs = expand_inputs([linked])
    assert [Path(j.path).name for j in jobs] == sorted(p.name for p in (real / "wav").glob("*.wav"))
    assert all(j.path.parent == linked / "emodb" for j in jobs)


def test_files_under_sees_each_real_folder_once_and_skips_resource_forks(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/x.wav", "a/b/y.WAV", "a/b/._y.wav", "a/notes.txt"):
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b", target_is_directory=True)
    found = [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path, (".wav",))]
    assert found == ["a/b/y.WAV", "a/x.wav"]

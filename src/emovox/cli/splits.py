"""``emovox splits``: write a protocol's folds to disk so anyone can audit them."""

from __future__ import annotations

from pathlib import Path

import typer

from emovox.cli import app


@app.command("splits")
def splits_command(
    specs: list[str] = typer.Argument(
        ..., metavar="SPEC...",
        help="Corpus spec, e.g. emodb:/data/emodb or iemocap:/data/IEMOCAP; several are pooled over the labels they share.",
    ),
    protocol: str = typer.Option(
        ...,
        "--protocol",
        "-p",
        help="leave-one-session-out | leave-one-speaker-out | speaker-groups:K[:shuffle] | stratified:K | "
        "holdout:FRACTION | official; over several corpora also leave-one-corpus-out | cross-corpus:TRAIN[:TEST] | in-corpus:K",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write fold_k/{train,valid,test}.jsonl and folds.json into."),
    validation: str = typer.Option(
        "strict", "--validation", help="strict: held-out part of training (test never seen); paper: the test fold itself."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of stratified/holdout splits and speaker-groups:K:shuffle."),
) -> None:
    """Split a corpus by an evaluation protocol, prove the folds, and write them as JSONL."""
    # Imported here so that `emovox --help` stays fast and does not load scikit-learn.
    from rich.console import Console
    from rich.table import Table

    from emovox.corpora import load_corpora
    from emovox.evaluation.reporting import NOT_SPEAKER_INDEPENDENT
    from emovox.splits.fold import write_folds
    from emovox.splits.protocols import make_folds

    corpus = load_corpora(specs)
    folds = make_folds(corpus, protocol, validation=validation, seed=seed)
    write_folds(folds, corpus, out)

    console = Console()
    table = Table(title=f"{corpus.name}: {protocol}, validation {validation}, seed {seed}")
    several = len(corpus.corpora) > 1
    for column in ("Fold", "Name", "Train", "Valid", "Test", "Test speakers", *(("Test corpora",) if several else ()),
                   "Missing train classes"):  # fmt: skip
        table.add_column(column)
    for fold in folds:
        table.add_row(
            str(fold.index),
            fold.name,
            str(len(fold.train)),
            str(len(fold.valid)) + (" (= test)" if validation == "paper" else ""),
            str(len(fold.test)),
            str(len(fold.speakers(corpus, "test"))),
            *((", ".join(fold.corpora(corpus, "test")),) if several else ()),
            ", ".join(fold.missing_train_classes(corpus)) or "-",
        )
    console.print(table)
    if not folds[0].speaker_independent:
        console.print(f"[bold red]{NOT_SPEAKER_INDEPENDENT}[/]: {protocol} mixes speakers across train and test")
    else:
        console.print("speaker-independent: checked, no speaker is shared between train/valid and test")
    if folds[0].corpus_independent:
        console.print("corpus-independent: checked, no test corpus is in train or valid")
    console.print(f"wrote {len(folds)} fold(s) to {out}")

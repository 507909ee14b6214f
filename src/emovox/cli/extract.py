"""``emovox extract``: fill the shared frozen-feature cache for a config, whole or one ``--shard i/n`` of it."""

from __future__ import annotations

from pathlib import Path

import typer

from emovox.cli import app
from emovox.cli.experiment import SET_HELP


@app.command()
def extract(
    config: Path = typer.Argument(..., help="Experiment YAML (see recipes/)."),
    set_: list[str] = typer.Option(None, "--set", help=SET_HELP),
    shard: str = typer.Option(
        None, "--shard", help="i/n: only shard i of n (1-based; in a SLURM array --shard $SLURM_ARRAY_TASK_ID/N)."
    ),
    chunk: int = typer.Option(
        64, "--chunk", min=1, help="Utterances per chunk (the unit of sharding; give every shard the same value)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Compute the config's frozen features into its cache (cache_dir) so fold jobs only read them.

    Run every shard 1/n .. n/n (in any order, at once or not) before the fold jobs; together they
    cache exactly what one unsharded `emovox extract` does.
    """
    from emovox.config import load_config
    from emovox.data.shards import Shard
    from emovox.training.extract import extract as run_extract

    cfg = load_config(config, set_)
    part = Shard.parse(shard)
    s = run_extract(cfg, part, chunk=chunk, progress=not quiet)
    if s.caching_models == 0:
        typer.echo(f"{cfg.name}: its model precomputes nothing (every backbone trains): there is nothing to extract")
        return
    from emovox.cache import default_cache_dir

    typer.echo(
        f"shard {part}: {s.utterances} utterances in {s.chunks} chunk(s); {s.computed} feature entries computed, "
        f"{s.cached} already cached, {len(s.skipped)} unusable; cache {cfg.cache_dir or default_cache_dir()}"
    )
    if s.skipped:
        from emovox.cli.experiment import warn_skipped

        warn_skipped([x.to_dict() for x in s.skipped], "`emovox cv` (results.json 'skipped')")

"""``sona eval``: the hybrid, each source and the baselines side by side (SPEC 7)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from service.cli.common import DATA_CHOICE, config_or_exit, load_or_exit
from sona_jax.eval.splits import TIE_BREAKS


@click.command(name="eval")
@click.option("--data", "kind", type=DATA_CHOICE, default="synthetic", show_default=True)
@click.option("--path", type=click.Path(), default=None, help="MovieLens folder.")
@click.option(
    "--protocol",
    type=click.Choice(["p1", "p2", "all"]),
    default="all",
    show_default=True,
    help="P1 next-watch, P2 random 25 % split, or both.",
)
@click.option("--config", "config_path", type=click.Path(), default=None, help="TOML config.")
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Write the JSON here (with --protocol all: one file per protocol, suffixed _p1/_p2).",
)
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="Tune fusion weights, graph walk, MMR λ and the cold-start genre strength on a "
    "validation split carved from train.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--ties",
    type=click.Choice(TIE_BREAKS),
    default="hashed",
    show_default=True,
    help="Order of a viewer's same-second events (P1's test item is the last): a fixed hash of "
    "(viewer, item), seeded random, or the file's line order.",
)
@click.option("--users", default=2_000, show_default=True, help="Synthetic viewers.")
@click.option("--items", default=3_000, show_default=True, help="Synthetic catalogue size.")
def evaluate_command(
    kind, path, protocol, config_path, out, tune, seed, ties, users, items
) -> None:
    """Evaluate the hybrid, each source and the baselines side by side (SPEC 7)."""
    from sona_lab.blas import single_threaded_blas

    single_threaded_blas()  # before implicit / scipy load their BLAS
    from sona_jax.eval.options import EvalOptions
    from sona_jax.eval.protocols import evaluate
    from sona_jax.eval.report import format_table

    cfg, _, _ = config_or_exit(config_path)
    dataset = load_or_exit(kind, path, users, items, seed)
    protocols = ["p1", "p2"] if protocol == "all" else [protocol]
    for name in protocols:
        options = EvalOptions(protocol=name, seed=seed, tune_fusion=tune, tie_break=ties)
        result = evaluate(
            dataset,
            cfg,
            options,
            log_fn=lambda message: click.echo(message, err=True),
            clock=time.perf_counter,
        )
        click.echo(format_table(result))
        click.echo(f"({result['seconds']:.0f}s)\n")
        if out:
            target = Path(out)
            if len(protocols) > 1:
                target = target.with_name(f"{target.stem}_{name}{target.suffix or '.json'}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(result, indent=2))

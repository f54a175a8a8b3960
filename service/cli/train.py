"""``sona train``: a model version from files."""

from __future__ import annotations

import json
import time

import click

from service.cli.common import DATA_CHOICE, config_or_exit, load_or_exit


@click.command()
@click.option("--data", "kind", type=DATA_CHOICE, default="synthetic", show_default=True)
@click.option("--path", type=click.Path(), default=None, help="MovieLens folder.")
@click.option("--config", "config_path", type=click.Path(), default=None, help="TOML config.")
@click.option(
    "--out",
    type=click.Path(),
    default="models",
    show_default=True,
    help="Model folder; each run adds a new version.",
)
@click.option("--users", default=5_000, show_default=True, help="Synthetic viewers.")
@click.option("--items", default=5_000, show_default=True, help="Synthetic catalogue size.")
@click.option("--seed", default=0, show_default=True, help="Synthetic data seed.")
def train(kind, path, config_path, out, users, items, seed) -> None:
    """Fit the base tier, build every preference vector, train every adapter, save a version."""
    from sona_lab.model_store import next_version, save_model
    from sona_lab.training import train_timed

    cfg, _, _ = config_or_exit(config_path)
    clock = time.perf_counter()
    dataset = load_or_exit(kind, path, users, items, seed)
    click.echo(
        f"loaded {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{len(dataset.events)} events in {time.perf_counter() - clock:.1f}s"
    )
    model = train_timed(dataset, cfg, version=next_version(out), progress=True)
    folder = save_model(model, out)
    click.echo(json.dumps(model.report, indent=2))
    click.echo(
        f"saved model version {model.version} to {folder} "
        f"({model.users.stored_bytes_per_user():.0f} bytes per user at rest)"
    )

"""``sona train``: a model version from files, or from the store (``--from-store``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from service.cli.common import DATA_CHOICE, config_or_exit, load_or_exit
from service.learning.rebuilds import EXIT_BUSY  # EX_TEMPFAIL: another trainer holds the lock


@click.command()
@click.option("--data", "kind", type=DATA_CHOICE, default="synthetic", show_default=True)
@click.option("--path", type=click.Path(), default=None, help="MovieLens folder.")
@click.option("--config", "config_path", type=click.Path(), default=None, help="TOML config.")
@click.option(
    "--out",
    type=click.Path(),
    default="models",
    show_default=True,
    help="Model folder; each run adds a new version (files only).",
)
@click.option("--users", default=5_000, show_default=True, help="Synthetic viewers.")
@click.option("--items", default=5_000, show_default=True, help="Synthetic catalogue size.")
@click.option("--seed", default=0, show_default=True, help="Synthetic data seed.")
@click.option(
    "--from-store",
    is_flag=True,
    help="Train on the store's catalogue and events; record the version in the store.",
)
@click.option(
    "--data-dir",
    envvar="SONA_DATA_DIR",
    default="sona-data",
    show_default=True,
    help="With --from-store: the embedded store and this host's model folder.",
)
@click.option(
    "--database-url",
    envvar="SONA_DATABASE_URL",
    default=None,
    help="With --from-store: postgresql://... (default: SQLite in --data-dir).",
)
@click.option("--keep", type=int, default=None, help="Versions kept (default [learning]).")
@click.option(
    "--devices",
    type=int,
    default=1,
    show_default=True,
    help="Split adapter training by viewer over this many local devices (jax.sharding mesh); "
    "0: all of them.",
)
@click.option("--config-json", default=None, hidden=True, help="Engine config as JSON.")
def train(
    kind,
    path,
    config_path,
    out,
    users,
    items,
    seed,
    from_store,
    data_dir,
    database_url,
    keep,
    devices,
    config_json,
) -> None:
    """Fit the base tier, build every preference vector, train every adapter, save a version."""
    cfg, _, learning = config_or_exit(config_path)
    if config_json is not None:  # the server's own config, passed to its rebuilds
        from sona_jax.config import config_from_dict

        cfg = config_from_dict(json.loads(config_json), source="--config-json")
    if from_store:
        keep = learning.keep_versions if keep is None else keep
        _train_from_store(cfg, keep, Path(data_dir), database_url, devices)
        return
    from sona_lab.model_store import next_version, save_model
    from sona_lab.training import train_timed

    clock = time.perf_counter()
    dataset = load_or_exit(kind, path, users, items, seed)
    click.echo(
        f"loaded {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{len(dataset.events)} events in {time.perf_counter() - clock:.1f}s"
    )
    import jax

    devices = devices or len(jax.devices())
    model = train_timed(dataset, cfg, version=next_version(out), progress=True, devices=devices)
    folder = save_model(model, out)
    click.echo(json.dumps(model.report, indent=2))
    click.echo(
        f"saved model version {model.version} to {folder} "
        f"({model.users.stored_bytes_per_user():.0f} bytes per user at rest)"
    )


def _train_from_store(
    cfg, keep: int, data_dir: Path, database_url: str | None, devices: int
) -> None:
    import asyncio

    import jax

    from service.learning.versions import NothingToTrain, TrainerBusy, train_from_store
    from service.storage import open_store

    async def run():
        store = open_store(database_url, data_dir)
        await store.open()
        try:
            return await train_from_store(
                store, cfg, data_dir / "models", keep, devices=devices or len(jax.devices())
            )
        finally:
            await store.close()

    clock = time.perf_counter()
    try:
        model = asyncio.run(run())
    except TrainerBusy as error:
        click.echo(f"not training: {error}", err=True)
        raise SystemExit(EXIT_BUSY) from None
    except NothingToTrain as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(model.report, indent=2, default=float))
    click.echo(
        f"trained model version {model.version} from the store in "
        f"{time.perf_counter() - clock:.1f}s and recorded it there"
    )

"""The ``sona`` command line: thin wrappers that parse options and call one function each."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from sona_jax.config import ConfigError, load_config
from sona_jax.datasets import DatasetError, load_dataset

DATA_KINDS = click.Choice(["synthetic", "ml-100k", "ml-latest"])


def _progress(iterable, description, total):
    from tqdm import tqdm

    return tqdm(iterable, desc=description, total=total, unit="chunk")


def _load_or_exit(kind: str, path: str | None, users: int, items: int, seed: int):
    try:
        return (
            load_dataset(kind, path, n_users=users, n_items=items, seed=seed)
            if kind == "synthetic"
            else load_dataset(kind, path)
        )
    except DatasetError as error:
        raise click.ClickException(str(error)) from None


def _config_or_exit(path: str | None):
    try:
        return load_config(path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.group()
def main() -> None:
    """SONA personalization engine."""


@main.command()
@click.option("--data", "kind", type=DATA_KINDS, default="synthetic", show_default=True)
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
    from service.model_store import next_version, save_model
    from sona_jax.pipeline import train_model

    cfg = _config_or_exit(config_path)
    clock = time.perf_counter()
    dataset = _load_or_exit(kind, path, users, items, seed)
    click.echo(
        f"loaded {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{len(dataset.events)} events in {time.perf_counter() - clock:.1f}s"
    )
    model = train_model(dataset, cfg, version=next_version(out), progress=_progress)
    folder = save_model(model, out)
    report = model.report
    click.echo(json.dumps(report, indent=2))
    click.echo(
        f"saved model version {model.version} to {folder} "
        f"({model.users.stored_bytes_per_user():.0f} bytes per user at rest)"
    )


@main.command(name="eval")
@click.option("--data", "kind", type=DATA_KINDS, default="synthetic", show_default=True)
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
@click.option("--users", default=2_000, show_default=True, help="Synthetic viewers.")
@click.option("--items", default=3_000, show_default=True, help="Synthetic catalogue size.")
def evaluate_command(kind, path, protocol, config_path, out, tune, seed, users, items) -> None:
    """Evaluate the hybrid, each source and the baselines side by side (SPEC 7)."""
    from sona_jax.evaluation import EvalOptions, evaluate, format_table

    cfg = _config_or_exit(config_path)
    dataset = _load_or_exit(kind, path, users, items, seed)
    protocols = ["p1", "p2"] if protocol == "all" else [protocol]
    for name in protocols:
        options = EvalOptions(protocol=name, seed=seed, tune_fusion=tune)
        result = evaluate(
            dataset, cfg, options, log_fn=lambda message: click.echo(message, err=True)
        )
        click.echo(format_table(result))
        click.echo(f"({result['seconds']:.0f}s)\n")
        if out:
            target = Path(out)
            if len(protocols) > 1:
                target = target.with_name(f"{target.stem}_{name}{target.suffix or '.json'}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(result, indent=2))


@main.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1 from the config).")
@click.option("--port", type=int, default=None, help="Port (default 8082 from the config).")
@click.option(
    "--data-dir",
    envvar="SONA_DATA_DIR",
    default="sona-data",
    show_default=True,
    help="Embedded store and model folder (env SONA_DATA_DIR).",
)
@click.option("--config", "config_path", type=click.Path(), default=None, help="TOML config.")
@click.option(
    "--database-url",
    envvar="SONA_DATABASE_URL",
    default=None,
    help="postgresql://... (env SONA_DATABASE_URL); default: SQLite in --data-dir.",
)
@click.option(
    "--redis-url",
    envvar="SONA_REDIS_URL",
    default=None,
    help="redis://... (env SONA_REDIS_URL); default: in-process cache.",
)
@click.option("--demo", is_flag=True, help="Load demo data into an empty store, train, serve.")
@click.option("--demo-data", type=DATA_KINDS, default="synthetic", show_default=True)
@click.option("--demo-path", type=click.Path(), default=None, help="MovieLens folder for demo.")
@click.option("--demo-users", default=2_000, show_default=True)
@click.option("--demo-items", default=3_000, show_default=True)
@click.option("--no-batching", is_flag=True, help="Serve each request alone (to measure).")
def serve(
    host,
    port,
    data_dir,
    config_path,
    database_url,
    redis_url,
    demo,
    demo_data,
    demo_path,
    demo_users,
    demo_items,
    no_batching,
) -> None:
    """Run the HTTP API (uvicorn, uvloop); Ctrl-C / SIGTERM drains batches and flushes writes."""
    import logging
    import os

    import uvicorn

    from service.app import Settings, create_app
    from service.threads import limit_xla_threads, set_gil_switch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = _config_or_exit(config_path)
    limit_xla_threads(cfg.serving.xla_threads)  # before anything starts the JAX backend
    set_gil_switch(cfg.serving.gil_switch_ms)
    if no_batching:
        cfg = cfg.with_overrides({"serving": {"batching": False}})

    def keys(name):
        return frozenset(k.strip() for k in os.environ.get(name, "").split(",") if k.strip())

    settings = Settings(
        config=cfg,
        data_dir=Path(data_dir),
        database_url=database_url,
        redis_url=redis_url,
        api_keys=keys("SONA_API_KEYS"),
        admin_keys=keys("SONA_ADMIN_KEYS"),
        demo=demo_data if demo else None,
        demo_path=demo_path,
        demo_users=demo_users,
        demo_items=demo_items,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=host or cfg.serving.host,
            port=port or cfg.serving.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=15,
            proxy_headers=False,
        )
    )  # nothing reads client addresses; skip the per-request wrapper
    click.echo(
        f"SONA serving on http://{host or cfg.serving.host}:{port or cfg.serving.port}"
        f" (docs at /docs)",
        err=True,
    )
    server.run()


@main.command()
@click.option("--data-dir", envvar="SONA_DATA_DIR", default="sona-data", show_default=True)
@click.option("--database-url", envvar="SONA_DATABASE_URL", default=None)
def migrate(data_dir, database_url) -> None:
    """Apply pending schema migrations (also done at start)."""
    import asyncio

    from service.storage import open_store

    async def run():
        store = open_store(database_url, data_dir)
        await store.open()
        version = await store.schema_version()
        await store.close()
        return store.kind, version

    kind, version = asyncio.run(run())
    click.echo(f"{kind} schema at version {version}")


def _register_subcommands() -> None:
    from service.cli_experiment import experiment

    main.add_command(experiment)


_register_subcommands()

if __name__ == "__main__":
    sys.exit(main())

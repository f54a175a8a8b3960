"""``sona serve``: the HTTP API on uvicorn (uvloop, httptools)."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import DATA_CHOICE, config_or_exit


@click.command()
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
@click.option("--demo-data", type=DATA_CHOICE, default="synthetic", show_default=True)
@click.option("--demo-path", type=click.Path(), default=None, help="MovieLens folder for demo.")
@click.option("--demo-users", default=2_000, show_default=True)
@click.option("--demo-items", default=3_000, show_default=True)
@click.option("--no-batching", is_flag=True, help="Serve each request alone (to measure).")
@click.option(
    "--compilation-cache-dir",
    envvar="SONA_COMPILATION_CACHE_DIR",
    default=None,
    help="Keep compiled programs here instead of under the data dir (servers of a host share).",
)
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
    compilation_cache_dir,
) -> None:
    """Run the HTTP API (uvicorn, uvloop); Ctrl-C / SIGTERM drains batches and flushes writes."""
    import logging
    import os

    import uvicorn

    from service.app import Settings, create_app
    from service.serving.threads import COMPILER_THREADS, limit_xla_threads, set_gil_switch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg, serving, learning = config_or_exit(config_path)
    limit_xla_threads(serving.xla_threads)  # before anything starts the JAX backend
    set_gil_switch(serving.gil_switch_ms)
    if serving.demote_compiler_threads:  # before the compilation cache is configured
        COMPILER_THREADS.probe()
    if no_batching:
        serving = serving.model_copy(update={"batching": False})
    if compilation_cache_dir:
        serving = serving.model_copy(update={"compilation_cache_dir": compilation_cache_dir})

    def keys(name):
        return frozenset(k.strip() for k in os.environ.get(name, "").split(",") if k.strip())

    settings = Settings(
        config=cfg,
        serving=serving,
        learning=learning,
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
            host=host or serving.host,
            port=port or serving.port,
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
        f"SONA serving on http://{host or serving.host}:{port or serving.port} (docs at /docs)",
        err=True,
    )
    server.run()

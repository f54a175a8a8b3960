"""``sona migrate``: apply pending schema migrations."""

from __future__ import annotations

import click


@click.command()
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

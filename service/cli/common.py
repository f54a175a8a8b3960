"""What the commands share: data kinds, loading data and config files with clean errors."""

from __future__ import annotations

import click

from sona_jax.config import ConfigError
from sona_jax.data import DatasetError
from sona_lab.datasets import DATA_KINDS

DATA_CHOICE = click.Choice(list(DATA_KINDS))


def load_or_exit(kind: str, path: str | None, users: int, items: int, seed: int):
    """The dataset, or a clean CLI error naming the file."""
    from sona_lab.datasets import load_dataset

    try:
        return (
            load_dataset(kind, path, n_users=users, n_items=items, seed=seed)
            if kind == "synthetic"
            else load_dataset(kind, path)
        )
    except DatasetError as error:
        raise click.ClickException(str(error)) from None


def config_or_exit(path: str | None):
    """(engine config, serving settings) of a TOML file, or a clean CLI error naming the key."""
    from service.settings import load_config_file

    try:
        return load_config_file(path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

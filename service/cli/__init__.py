"""The ``sona`` command line: thin wrappers that parse options and call one function each."""

from __future__ import annotations

import sys

import click

from service.cli.evaluate import evaluate_command
from service.cli.experiment import experiment
from service.cli.migrate import migrate
from service.cli.serve import serve
from service.cli.train import train


@click.group()
def main() -> None:
    """SONA personalization engine."""


for command in (train, evaluate_command, serve, migrate, experiment):
    main.add_command(command)

if __name__ == "__main__":
    sys.exit(main())

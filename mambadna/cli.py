"""The ``mambadna`` command line: each command parses options and calls one library function.

Domain errors (mambadna.errors) are printed as ``file:line: message`` and exit with status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from mambadna._version import __version__
from mambadna.errors import MambaDNAError


class _Group(click.Group):
    """A click group that turns domain errors into one clean line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MambaDNAError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mambadna")
def cli() -> None:
    """Mamba models for long DNA sequences: read, tokenize, train, classify, embed."""


def main() -> None:
    cli()

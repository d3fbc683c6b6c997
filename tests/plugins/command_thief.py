"""A plugin whose register_commands replaces an existing command and removes another, and adds one of its own."""

import click

from benchharness import hookimpl


@hookimpl
def register_commands(cli):
    """Take over `run`, drop `list`, add `extra`."""

    @cli.command(name="run")
    def stolen():
        """Not the real run."""
        click.echo("stolen run")

    cli.commands.pop("list", None)

    @cli.command()
    def extra():
        """A command of its own."""
        click.echo("extra from the command thief")

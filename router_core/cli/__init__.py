"""The ``event-router`` command line.

Exit codes: 0 every destination delivered; 1 some destination failed; 2 bad input or config
(one line on stderr says what to fix); 3 internal error; 130 interrupted. ``--json`` on every
command prints machine-readable JSON only on stdout.
"""

from __future__ import annotations

import click

from router_core.cli import config, outbox, plugins, run, sandbox, send, worker
from router_core.cli.errors import EXIT_OK, RouterGroup
from router_core.cli.options import setup_logging
from router_core.http import LIBRARY_VERSION

__all__ = ["main"]


@click.group(cls=RouterGroup, invoke_without_command=True)
@click.version_option(LIBRARY_VERSION, prog_name="event-router")
@click.pass_context
def main(ctx: click.Context) -> int:
    """Send each analytics event once; event-router fans it out to every destination."""
    # Before any plugin loads: a plugin that fails to load is a warning line on stderr.
    setup_logging(verbose=False)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
    return EXIT_OK


# Every command, in one place: a new command (group) is one module import above and one line
# here. (Modules are imported, not their commands, so router_core.cli.<name> stays the module.)
main.add_command(send.send)
main.add_command(run.run)
main.add_command(plugins.plugins)
main.add_command(config.config)
main.add_command(sandbox.sandbox)
main.add_command(sandbox.demo)
main.add_command(outbox.outbox)
main.add_command(worker.worker)

"""The ``event-router`` command line.

Exit codes: 0 every destination delivered; 1 some destination failed; 2 bad input or config
(one line on stderr says what to fix); 3 internal error; 130 interrupted. ``--json`` on every
command prints machine-readable JSON only on stdout, errors included. ``-h`` is ``--help``
everywhere; ``_EVENT_ROUTER_COMPLETE=bash_source event-router`` prints a completion script.
"""

from __future__ import annotations

import click

from router_core.cli import config, outbox, plugins, preview, run, sandbox, scaffold, send, worker
from router_core.cli.errors import EXIT_OK, RouterGroup
from router_core.cli.options import plugin_registry, setup_logging
from router_core.http import LIBRARY_VERSION

__all__ = ["main"]


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: the core's version, then every plugin seen, loaded or not."""
    if not value or ctx.resilient_parsing:
        return
    setup_logging(verbose=False)  # a plugin that fails to load: listed below, and warned
    lines = [f"event-router, version {LIBRARY_VERSION}"]
    registry = plugin_registry()
    infos = registry.infos()
    lines.append("plugins:" if infos else "plugins: none installed")
    for info in infos:
        package = " ".join(p for p in (info.distribution, info.version) if p)
        status = "" if info.loaded else f"  failed to load: {info.error}"
        lines.append(f"  {info.name} {package or '(registered in-process)'}{status}")
    lines += [f"  {line}" for line in registry.unmatched()]
    click.echo("\n".join(lines))
    ctx.exit()


HELP_OPTIONS = ["-h", "--help"]


@click.group(
    cls=RouterGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": HELP_OPTIONS},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and the installed plugins' versions, and exit.",
)
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
main.add_command(preview.preview)
main.add_command(run.run)
main.add_command(plugins.plugins)
main.add_command(config.config)
main.add_command(sandbox.sandbox)
main.add_command(sandbox.demo)
main.add_command(outbox.outbox)
main.add_command(scaffold.new_plugin)
main.add_command(worker.worker)


def _help_everywhere(command: click.Command) -> None:
    """``-h`` on every command, also when one is run on its own (an embedding app, tests):
    click settles a command's help option the first time it is asked for, from that run."""
    command.context_settings.setdefault("help_option_names", HELP_OPTIONS)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _help_everywhere(sub)


_help_everywhere(main)

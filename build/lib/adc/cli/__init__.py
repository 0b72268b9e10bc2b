"""The ``adc`` command line: parses arguments, calls the library, prints with rich.

Every bad input is one line on stderr and exit code 2 (a traceback only with
``--debug``, accepted anywhere on the line); Ctrl-C during a search stops it
at the end of the round and writes the best result so far.
"""

from __future__ import annotations

import sys

import typer

from adc.cli.export import export_command
from adc.cli.finetune import finetune_command
from adc.cli.latency import latency_table_command
from adc.cli.profile import profile_command
from adc.cli.search import search_command
from adc.utils.errors import AdcError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="AMC-style automated channel pruning: find how much of each layer to prune under a budget.")


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors (accepted anywhere).")) -> None:
    """Global options (handled in :func:`main`)."""


app.command("search")(search_command)
app.command("profile")(profile_command)
app.command("latency-table")(latency_table_command)
app.command("finetune")(finetune_command)
app.command("export")(export_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: AdcError -> one line on stderr, exit code 2 (``--debug`` anywhere: the traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="adc", standalone_mode=True)
    except AdcError as exc:
        if debug:
            raise
        # One line whatever the terminal width: rich would wrap a long message at 80 columns.
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""What every command shares: how its Typer app is made, --json, hints and terminal logging."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

import typer
# Typer vendors Click and does not re-export its exception base.
from typer._click.exceptions import ClickException

from han_ota.progress import ConsoleHandler


def new_app(**kwargs: Any) -> typer.Typer:
    """A Typer app with the project's help style.

    Rich markup is off: it ate ``[default: ...]`` and ``[[sim_device]]`` from help
    texts, showed flags as ``<bool>`` and kept docstrings' hard line breaks. Click's
    plain formatter keeps the text and re-wraps paragraphs to the terminal.
    """
    options: dict[str, Any] = {
        "no_args_is_help": True,
        "add_completion": False,
        "pretty_exceptions_enable": False,
        "rich_markup_mode": None,
    }
    options.update(kwargs)
    return typer.Typer(**options)


def print_json(obj: Any) -> None:
    """``--json`` output: one object on one line, so the last line is always the result."""
    typer.echo(json.dumps(obj))


def run(app: typer.Typer, argv: list[str]) -> int:
    """Run ``app``; with ``--json`` a usage error still ends in a JSON object.

    Click reports a bad option before the command runs, so the command's own
    ``--json`` handling never sees it: scripts would get only text on stderr.
    """
    if "--json" not in argv:
        app(args=argv)
        return 0
    try:
        code = app(args=argv, standalone_mode=False)
    except ClickException as exc:
        exc.show()
        print_json({"error": exc.format_message()})
        return exc.exit_code
    except typer.Abort:
        print_json({"error": "interrupted"})
        return 130
    return code if isinstance(code, int) else 0


def hint(words: str, config: Path | None) -> str:
    """A command to suggest, with the ``--config`` the user gave (or it would talk to another daemon)."""
    parts = ["han-ota", *shlex.split(words)]
    if config is not None:
        parts += ["--config", str(config)]
    return "`" + shlex.join(parts) + "`"


def setup_logging(verbose: int, *, default: int = logging.WARNING) -> None:
    """-v: our INFO lines, -vv: DEBUG and the radio libraries'. Without -v only warnings.

    On a terminal a bar or a command's own output is the news; every step is in the
    audit log anyway. Warnings then read as ``warning: ...``, not as a log record.
    """
    level, handler = console_logging(verbose, sys.stderr, default=default)
    logging.basicConfig(level=level, handlers=[handler])
    # The radio libraries are chatty at INFO; keep our own lines readable.
    for noisy in ("zigpy", "bellows", "zigpy_znp", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def console_logging(verbose: int, stream: TextIO, *, default: int = logging.WARNING) -> tuple[int, logging.Handler]:
    level = default if verbose == 0 else (logging.INFO if verbose == 1 else logging.DEBUG)
    handler = ConsoleHandler(stream)
    if verbose == 0 and default >= logging.WARNING:
        handler.setFormatter(_PlainFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return level, handler


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"

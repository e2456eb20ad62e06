"""One way to make a ``typer.Typer`` for every command group."""

from __future__ import annotations

from typing import Any

import typer


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

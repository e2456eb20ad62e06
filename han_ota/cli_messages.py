"""`han-ota messages`: every GBCS message the hub emitted, forwarded or received (issue 13).

Through the running daemon's control API (GET /v1/messages) when one answers, else
straight from the state directory's store (``--state-dir``, or the config's; it is
only read, though opening it brings an older schema up to date). ``--follow`` keeps printing new ones. Text: one line per message; ``--json``:
one JSON object per line, as the control API gives them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from eui64 import Eui64, Eui64Error
from han_ota.cli_daemon import ConfigOption, JsonOption, _config, _fail
from han_ota.client import DaemonError, find_daemon

EXIT_CONFIG = 2
PAGE = 1000
FOLLOW_INTERVAL_S = 0.5

Fetch = Callable[[Optional[str], Optional[int], int], list[dict[str, Any]]]


def messages(
    device: Annotated[Optional[str], typer.Option("--device", metavar="IEEE", help="Only this device's messages.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new messages as they are kept.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Read this state directory's store instead of asking the daemon.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The GBCS messages the hub emitted (its CCS08 alerts), forwarded and received, oldest first."""
    if device is not None:
        try:
            device = str(Eui64.parse(device, "--device"))
        except Eui64Error as exc:
            _fail(str(exc), EXIT_CONFIG, as_json=as_json)
    client = None
    if state_dir is None:
        cfg = _config(config, as_json=as_json)
        try:
            client = find_daemon(cfg)
        except DaemonError:
            client = None  # not allowed on the socket: the store may still be readable
        state_dir = cfg.state_dir
    fetch = _daemon_fetch(client) if client is not None else _store_fetch(state_dir, as_json)
    try:
        last = None
        for message in _pages(fetch, device, None):
            _print(message, as_json)
            last = message["id"]
        while follow:
            time.sleep(FOLLOW_INTERVAL_S)
            for message in _pages(fetch, device, last):
                _print(message, as_json)
                last = message["id"]
    except KeyboardInterrupt:
        pass
    except (DaemonError, OSError) as exc:
        _fail(str(exc), as_json=as_json)


def _pages(fetch: Fetch, device: str | None, after: int | None) -> Iterator[dict[str, Any]]:
    while True:
        page = fetch(device, after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]["id"]


def _daemon_fetch(client: Any) -> Fetch:
    def fetch(device: str | None, after: int | None, limit: int) -> list[dict[str, Any]]:
        return list(client.messages(device=device, after=after, limit=limit)["messages"])

    return fetch


def _store_fetch(state_dir: Path, as_json: bool) -> Fetch:
    from gateway.store import DEFAULT_FILENAME, StateStore, StoreError

    if not (state_dir / DEFAULT_FILENAME).is_file():
        _fail(f"no state store in {state_dir}: no messages kept there (is --state-dir right?)", as_json=as_json)

    def fetch(device: str | None, after: int | None, limit: int) -> list[dict[str, Any]]:
        # Opened per page: a reader holds no connection between polls, so the daemon's
        # writes never wait on it.
        try:
            with StateStore.in_state_dir(state_dir) as store:
                # Oldest first past ``after``: the store gives the newest ``limit``, so read all then cut.
                rows = store.list_messages(device=device, after_id=after)
        except StoreError as exc:
            raise OSError(str(exc)) from None
        return [m.to_dict() for m in rows[:limit]]

    return fetch


def _print(message: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(message, sort_keys=True, separators=(",", ":")))
        return
    code = message.get("code_hex") or "-"
    parts = [
        f"{message['id']:>6}", message["at"], f"{message['direction']:<3}", message.get("device") or "-",
        code, message.get("cra") or "-", f"{message.get('originator') or '-'}->{message.get('recipient') or '-'}",
        f"counter={message.get('counter')}", f"signature={message.get('signature')}",
    ]
    if message.get("job") is not None:
        parts.append(f"job={message['job']}")
    parts.append(message.get("hex") or "")
    typer.echo(" ".join(parts))


def register(app: typer.Typer) -> None:
    app.command("messages")(messages)


__all__ = ["messages", "register"]

"""What every command shares: opening the store, printing text or JSON, the config."""
from __future__ import annotations

import json
import os
import sys

from ..errors import CdrTraceError

EXIT_FAILURE = 2
_OPENED: list = []   # stores a command opened; main() closes them


def open_store(args, create=False, readonly_index=False, **settings):
    """The store; readonly_index for commands that only read the index (trace, status,
    last-calls, stats): they open it without a write transaction, never waiting for an
    ingest's commit."""
    from ..api import Store

    path = args.db or os.environ.get("CDRTRACE_DB")
    if not path:
        raise CdrTraceError("no store given: use --db PATH or set CDRTRACE_DB")
    store = Store(path, create=create, readonly_index=readonly_index, **settings)
    _OPENED.append(store)
    return store


def emit(args, payload, text: str) -> None:
    print(json.dumps(payload, indent=1) if args.json else text)


def progress_bar():
    if not sys.stderr.isatty():
        return None

    def show(done: int, size: int | None) -> None:
        if size:
            sys.stderr.write(f"\r  {done / size:6.1%}  {done / 1e6:,.0f} of {size / 1e6:,.0f} MB")
        else:
            sys.stderr.write(f"\r  {done / 1e6:,.0f} MB")
        sys.stderr.flush()

    return show


def load_config(args, store=None):
    from .. import config

    return config.load(config.find(args.config, store.path if store else None))

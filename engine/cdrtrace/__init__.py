"""cdrtrace: *57 call trace for telephone carriers, from switch CDR streams.

    import cdrtrace
    store = cdrtrace.open("/var/lib/cdrtrace", create=True)
    cdrtrace.ingest(store, ["Master.csv"], zone="America/Denver")
    result = store.trace("303-555-0110")      # the customer's view: no caller identity
    print(result.announcement)
"""
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .errors import (
                     AccessError,
                     AuditError,
                     CaseError,
                     CdrTraceError,
                     ConfigError,
                     DirectoryError,
                     FormatError,
                     NativeModuleError,
                     NotFoundError,
                     NotReadyError,
                     NumberError,
                     ParseError,
                     SourceError,
                     StoreError,
                     SynthError,
                     TraceError,
                     UnknownCaseError,
                     UnknownRequestError,
                     UnknownTokenError,
                     WrongShardError,
                     ZoneError,
)

# The rest loads when first used, so `import cdrtrace` and `cdrtrace --help` stay quick
# (numpy, pyarrow, DuckDB and LMDB load with the part that needs them).
_LAZY = {
    "open": "api", "Store": "api", "ANNOUNCEMENTS": "evidence.outcomes",
    "CustomerStatus": "evidence.outcomes", "Outcome": "evidence.outcomes",
    "TraceResult": "evidence.outcomes", "IngestSummary": "ingestion.batch",
    "ingest": "ingestion.batch", "follow": "ingestion.following",
    "stream_stdin": "ingestion.following", "consume": "ingestion.kafka",
    "StreamOptions": "ingestion.live", "StreamSummary": "ingestion.live",
    "CallBatch": "parsing.formats", "Disposition": "parsing.formats",
    "Presentation": "parsing.formats", "make_parser": "parsing.parsers",
}
if TYPE_CHECKING:
    from .api import Store, open  # noqa: A004
    from .evidence.outcomes import ANNOUNCEMENTS, CustomerStatus, Outcome, TraceResult
    from .ingestion.batch import IngestSummary, ingest
    from .ingestion.following import follow, stream_stdin
    from .ingestion.kafka import consume
    from .ingestion.live import StreamOptions, StreamSummary
    from .parsing.formats import CallBatch, Disposition, Presentation
    from .parsing.parsers import make_parser


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cdrtrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _check_native() -> None:
    """A build without its native modules fails here, at import, saying what to do (its
    modules load later, with numpy)."""
    for module, what in (("store._index", "index kernel"), ("parsing._parse", "parser")):
        try:
            found = importlib.util.find_spec(f"cdrtrace.{module}")
        except ImportError as exc:
            found, problem = None, str(exc)
        else:
            problem = "no such module"
        if found is None:
            raise NativeModuleError(
                f"cdrtrace's native {what} did not import ({problem}); reinstall with "
                "`pip install .` so the extensions are built")


_check_native()

__version__ = "0.1.0"

__all__ = [
    "open", "Store", "ingest", "IngestSummary", "follow", "stream_stdin", "consume",
    "StreamOptions", "StreamSummary", "make_parser", "CallBatch", "Outcome",
    "TraceResult", "CustomerStatus", "ANNOUNCEMENTS", "Presentation", "Disposition",
    "CdrTraceError", "ParseError", "NumberError", "StoreError", "SourceError", "TraceError",
    "AccessError", "NativeModuleError", "FormatError", "AuditError", "ConfigError",
    "DirectoryError", "SynthError", "ZoneError", "CaseError", "NotReadyError", "WrongShardError",
    "NotFoundError", "UnknownCaseError", "UnknownRequestError", "UnknownTokenError",
]

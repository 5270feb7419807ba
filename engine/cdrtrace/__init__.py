"""cdrtrace: *57 call trace for telephone carriers, from switch CDR streams.

    import cdrtrace
    store = cdrtrace.open("/var/lib/cdrtrace", create=True)
    cdrtrace.ingest(store, ["Master.csv"], zone="America/Denver")
    result = store.trace("303-555-0110")      # the customer's view: no caller identity
    print(result.announcement)
"""
from .api import Store, open  # noqa: A004
from .errors import (
                     AccessError,
                     AuditError,
                     CaseError,
                     CdrTraceError,
                     ConfigError,
                     DirectoryError,
                     FormatError,
                     NativeModuleError,
                     NumberError,
                     ParseError,
                     SourceError,
                     StoreError,
                     SynthError,
                     TraceError,
                     ZoneError,
)
from .evidence.outcomes import ANNOUNCEMENTS, CustomerStatus, Outcome, TraceResult
from .ingestion.batch import IngestSummary, ingest
from .ingestion.following import follow, stream_stdin
from .ingestion.kafka import consume
from .ingestion.live import StreamOptions, StreamSummary
from .parsing.formats import CallBatch, Disposition, Presentation
from .parsing.parsers import make_parser

__version__ = "0.1.0"

__all__ = [
    "open", "Store", "ingest", "IngestSummary", "follow", "stream_stdin", "consume",
    "StreamOptions", "StreamSummary", "make_parser", "CallBatch", "Outcome",
    "TraceResult", "CustomerStatus", "ANNOUNCEMENTS", "Presentation", "Disposition",
    "CdrTraceError", "ParseError", "NumberError", "StoreError", "SourceError", "TraceError",
    "AccessError", "NativeModuleError", "FormatError", "AuditError", "ConfigError",
    "DirectoryError", "SynthError", "ZoneError", "CaseError",
]

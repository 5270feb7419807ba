"""One exception hierarchy; each class also inherits the matching built-in."""

# Why a CDR record was rejected, indexed by the parsers' reason codes (1-13).
REJECT_REASONS = (
    "",
    "wrong field count: {detail} (expected {expected})",
    "unterminated quote",
    "unexpected character after closing quote",
    "quote inside unquoted field",
    "carriage return inside a record",
    "NUL byte",
    "record over 64 KiB",
    "bad timestamp in column {detail}",
    "bad duration in column {detail}",
    "unknown disposition in column {detail}",
    "bad cause in column {detail}",
    "a run of NUL bytes where records should be (a crash, or a file truncated while its "
    "writer kept its place): whatever records they replaced are lost",
    "cut short by a run of NUL bytes",
)


class CdrTraceError(Exception):
    """Root of every error cdrtrace raises on purpose."""


class NumberError(CdrTraceError, ValueError):
    """A telephone number (or line) does not normalise."""


class StoreError(CdrTraceError, OSError):
    """The store is missing, unreadable, or not a cdrtrace store."""


class SourceError(CdrTraceError, OSError):
    """A CDR source cannot be opened or read."""


class TraceError(CdrTraceError, ValueError):
    """A trace request is invalid (bad time, or the index no longer holds the call)."""


class NotReadyError(TraceError):
    """A shard's replica that must not answer traces now: its live feeds are further
    behind than its shard's max_lag_seconds, or none is consuming."""


class WrongShardError(TraceError):
    """A trace asked of a shard's store for a line it does not hold; .peer is the shard
    of the map that holds it (None if none does)."""

    def __init__(self, message: str, peer: object = None):
        super().__init__(message)
        self.peer = peer


class NotFoundError(CdrTraceError, LookupError):
    """What a request names by its id does not exist (HTTP 404)."""


class CaseError(TraceError):
    """A case request is invalid: a missing field, an unknown case or origin."""


class UnknownCaseError(CaseError, NotFoundError):
    """No case has the id asked for."""


class UnknownRequestError(CaseError, NotFoundError):
    """No request for action has the id asked for."""


class UnknownTokenError(NotFoundError):
    """No token has the name asked for."""


class AccessError(CdrTraceError, PermissionError):
    """An identifying read was attempted without the required role."""


class NativeModuleError(CdrTraceError, ImportError):
    """The compiled core did not import; cdrtrace never falls back silently."""


class AuditError(CdrTraceError, ValueError):
    """The audit log does not verify."""


class ConfigError(CdrTraceError, ValueError):
    """cdrtrace.toml is missing, malformed, or names something that does not exist; or a
    setting is out of range."""


class DirectoryError(CdrTraceError, ValueError):
    """A directory file that cannot be imported; the message says which row."""


class FormatError(CdrTraceError, ValueError):
    """An unknown format name, or a source whose format cannot be told: name it."""


class ParseError(FormatError):
    """A source's bytes do not fit its format (its header, its first line); the message
    says which source and where. Records that do not parse are rejects, not errors."""


class SynthError(CdrTraceError, ValueError):
    """synth was asked for something it cannot write."""


class ZoneError(CdrTraceError, ValueError):
    """The feed names a time zone this machine does not know."""

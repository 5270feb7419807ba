"""One exception hierarchy; each class also inherits the matching built-in."""


class CdrTraceError(Exception):
    """Root of every error cdrtrace raises on purpose."""


class ParseError(CdrTraceError, ValueError):
    """A CDR could not be read; the message says where."""


class NumberError(CdrTraceError, ValueError):
    """A telephone number (or line) does not normalise."""


class StoreError(CdrTraceError, OSError):
    """The store is missing, unreadable, or not a cdrtrace store."""


class SourceError(CdrTraceError, OSError):
    """A CDR source cannot be opened or read."""


class TraceError(CdrTraceError, ValueError):
    """A trace request is invalid (bad time, or the index no longer holds the call)."""


class AccessError(CdrTraceError, PermissionError):
    """An identifying read was attempted without the required role."""


class NativeModuleError(CdrTraceError, ImportError):
    """The compiled core did not import; cdrtrace never falls back silently."""

"""The wire exchanges in C on their own thread: FastAGI (ext/_agi.pyx, ext/_agi.h) and
HTTP's switch traces (ext/_http.h)."""
from collections.abc import Sequence

REQUEST: int
DONE: int
CLOSED: int
REFUSED: int
HANDOFF: int
MAX_HEAD: int
MAX_BODY: int
UNANSWERED: int
SLOW: int
TWICE: int
OUTCOMES: int
BOUNDS: int

def bucket(bounds: Sequence[float], seconds: float) -> int: ...

class Server:
    def __init__(self, fd: int, networks: Sequence[tuple[int, bytes, int]], max_connections: int,
                 timeout: float, answer_timeout: float = ..., cores: Sequence[int] = ...,
                 http: bool = ..., bounds: Sequence[float] = ...) -> None: ...
    @property
    def wakeup_fd(self) -> int: ...
    def take(self) -> list[tuple[int, int, int, float, str, int, tuple | bytes | None]]: ...
    def respond(self, conn: int, commands: bytes, status: int = ..., log: bytes | None = ...,
                log_fd: int = ..., outcome: int = ...) -> None: ...
    def metrics(self) -> tuple[list[int], list[float], list[int], float, float]: ...
    def stop_accepting(self) -> None: ...
    def open_connections(self) -> int: ...
    def close(self) -> None: ...

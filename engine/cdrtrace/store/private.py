"""Files only the service user can read: everything a store writes holds callers'
numbers (the index, the evidence, rejected CDRs, the archive, audit exports), so every
directory is created 0700 and every file 0600, whatever the process umask, and a store
others can read is refused on open."""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any

from ..errors import CdrTraceError, StoreError

DIR_MODE, FILE_MODE = 0o700, 0o600


def make_dir(path: str | os.PathLike) -> Path:
    """path and any parent it creates, each 0700 (existing parents are left alone)."""
    path = Path(path)
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        os.chmod(folder, DIR_MODE)
    return path


def open_file(path: str | os.PathLike, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """open(path, mode), the file created 0600 (an existing one is made 0600 too). What
    it is written holds callers' numbers (a case report, rejected records), and its path
    may lie where another local user can write (--out /tmp/...): it is never opened
    through a symbolic link, nor is it another user's file, or a file with another name
    too (a hard link: /etc/passwd's, say, under a name in /tmp), which a privileged
    process would write into and another could read or break. StoreError then, the file
    as it was (it is emptied for "w" once it is known to be the process's own)."""
    flags = {"a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "w": os.O_WRONLY | os.O_CREAT,
             "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "wb": os.O_WRONLY | os.O_CREAT,
             "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
    try:        # (non-blocking: a named pipe nobody reads would hold the process for ever)
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path} is a symbolic link: name the file itself (cdrtrace writes "
                             "callers' data only to a file of its own)") from None
        if exc.errno == errno.ENXIO:
            raise StoreError(f"{path} is not a plain file: cdrtrace writes callers' data only "
                             "to a file of its own; remove it, or name another") from None
        raise
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid() or found.st_nlink != 1:
            raise StoreError(
                f"{path} is " + ("not a plain file" if not stat.S_ISREG(found.st_mode) else
                                 "another user's file" if found.st_uid != os.geteuid() else
                                 f"a file with {found.st_nlink - 1} other name(s) (hard links)")
                + ": cdrtrace writes callers' data only to a file of its own; remove it, or "
                "name another")
        os.fchmod(fd, FILE_MODE)
        if mode.startswith("w"):
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def restrict(path: str | os.PathLike) -> None:
    """A file another library wrote (LMDB's, Parquet's): 0600."""
    os.chmod(path, FILE_MODE)


def check(store: Path, paths: list[Path]) -> None:
    """Refuse a store any of whose paths others can read or write, saying the fix."""
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            raise StoreError(
                f"{path} is readable by other users (mode {mode:o}): it holds callers' "
                f"numbers; run `chmod -R go-rwx {store}` and run cdrtrace as its own "
                "service user")


def read_key(path: str | os.PathLike, flag: str) -> str:
    """The shared key in the file flag names: its one line, at least 32 of the characters
    a URL carries as they are (letters, digits, - and _); the file readable by its owner
    alone. CdrTraceError, saying the fix, else."""
    key = _key_file(path, flag).strip()
    if not _good_key(key):
        raise CdrTraceError(f"{flag} {path} must hold one key of at least 32 letters, digits, "
                            "- or _ (make one with `openssl rand -hex 32`)")
    return key


def read_keys(path: str | os.PathLike, flag: str, most: int = 8) -> tuple[str, ...]:
    """The shared keys in the file flag names, one a line (blank lines left out), 1 to
    `most` of them, each as read_key's: while a key is changed, the old and the new are
    both taken. CdrTraceError saying which line is wrong."""
    lines = [(n, text.strip()) for n, text in enumerate(_key_file(path, flag).splitlines(), 1)]
    keys = [(n, key) for n, key in lines if key]
    if not 1 <= len(keys) <= most:
        raise CdrTraceError(f"{flag} {path} must hold 1 to {most} keys, one a line "
                            f"(it holds {len(keys)})")
    for n, key in keys:
        if not _good_key(key):
            raise CdrTraceError(f"{flag} {path}, line {n}: a key is at least 32 letters, "
                                "digits, - or _ (make one with `openssl rand -hex 32`)")
    return tuple(key for _, key in keys)


def _good_key(key: str) -> bool:
    return len(key) >= 32 and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)


def _key_file(path: str | os.PathLike, flag: str) -> str:
    """A key file's text, refused unless it is a small file of text its owner alone reads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            found = os.fstat(fd)
            data = os.read(fd, 4097) if stat.S_ISREG(found.st_mode) else None
        finally:
            os.close(fd)
        if data is None or len(data) > 4096:
            raise CdrTraceError(f"{flag} {path} is not a key file (lines of text)")
        text = data.decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CdrTraceError(f"cannot read {flag} {path}: {exc}") from None
    mode = stat.S_IMODE(found.st_mode)
    if mode & 0o077:
        raise CdrTraceError(f"{flag} {path} is readable by other users (mode {mode:o}): "
                            f"run `chmod 600 {path}`")
    return text


def create_secret(path: str | os.PathLike) -> Path:
    """A new random 256-bit key at path, 0600, its folder 0700 if made; an existing key
    is never overwritten."""
    path = Path(path)
    if not path.parent.exists():
        make_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path

"""Key files on disk that hold secrets: the persistent key cache and key exports.

Both are JSON objects of KeyID (or key URI) -> 32 hex digits, the format ``--keys`` reads,
created with mode 0600 and replaced atomically, so a crash never leaves half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from .crypto import DataKey
from .errors import OutputError, UsageError
from .playlist import KeyRef


def write_keys(path: str | BinaryIO, keys: dict[str, DataKey]) -> None:
    """Write ``keys`` to ``path`` (mode 0600, atomically), or to a binary file the caller opened:
    the one place key material reaches a file."""
    if not isinstance(path, str):
        path.write(_keys_json(keys).encode())
        return
    target = os.path.abspath(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=os.path.dirname(target))
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
            f.write(_keys_json(keys))
        os.replace(temp, target)
    except OSError as exc:
        os.unlink(temp)
        raise OutputError(f"{path}: {exc.strerror}") from None
    except BaseException:
        os.unlink(temp)
        raise


def _keys_json(keys: dict[str, DataKey]) -> str:
    return json.dumps({name: key.reveal().hex() for name, key in sorted(keys.items())}, indent=2) + "\n"


def write_key_file(path: str, key: DataKey) -> None:
    """One key as the 16 bytes a key URI serves (mode 0600, never over an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.reveal())


def read_keys(path: str, what: str) -> dict[str, DataKey]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"{what} {path}: cannot read a JSON object ({exc.__class__.__name__})", option=what) from None
    if not isinstance(raw, dict):
        raise UsageError(f"{what} {path}: want a JSON object of KeyID or key URI -> hex key", option=what)
    keys = {}
    for name, value in raw.items():
        try:
            keys[name] = DataKey.from_hex(str(value))
        except ValueError:
            raise UsageError(f"{what} {path}: the value for {name!r} is not 32 hex digits", option=what) from None
    return keys


class KeyCache:
    """A key cache file (``cache=``, ``--key-cache``): keys fetched by KeyID are kept, so that a re-run asks nobody.

    Several processes may share one cache: a writer takes the lock beside it, reads what the
    others wrote meanwhile, and writes the union, so no process's keys are lost.
    """

    def __init__(self, path: str):
        self.path = path
        self.name = f"key cache {path}"
        self._lock = threading.Lock()
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UsageError(f"cache {path}: no such folder {folder}", option="cache")
        self._keys = self._read()

    def _read(self) -> dict[str, DataKey]:
        try:
            return read_keys(self.path, "cache")
        except FileNotFoundError:
            return {}

    def lookup(self, ref: KeyRef) -> DataKey | None:
        return self._keys.get(ref.key_id) if ref.key_id else None

    def store(self, ref: KeyRef, key: DataKey) -> None:
        if not ref.key_id or self._keys.get(ref.key_id) == key:
            return
        with self._lock, self._file_lock():
            merged = {**self._read(), ref.key_id: key}
            write_keys(self.path, merged)
            self._keys = merged

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """A lock file beside the cache: the cache itself is replaced on each write, so it cannot hold one."""
        folder, name = os.path.split(os.path.abspath(self.path))
        try:
            fd = os.open(os.path.join(folder, f".{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise OutputError(f"cache {self.path}: cannot lock it ({exc.strerror})", option="cache") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

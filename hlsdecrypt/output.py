"""Where decrypted bytes go: a file that appears under its name only when complete, or stdout.

The file is written beside its target under a temporary name and renamed into place at the
end. With ``resume``, the temporary file has a fixed name (``.NAME.part``) and a journal
beside it (``.NAME.part.json``) records how many parts and bytes are safely written, a
fingerprint of the plan, and fingerprints (not the values) of the keys used; a later run with
``resume`` continues from there when the plan and keys are unchanged. The journal is rewritten
after a part at most every ``JOURNAL_PERIOD`` seconds, and when the run stops: rewriting it
after every one of a day-long recording's 100,000 parts, each time with all its keys, would
cost more than the decryption. A run killed outright redoes at most that much work.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import os
import queue
import stat
import sys
import tempfile
import threading
import time
from typing import BinaryIO, Callable, Iterable, TypeVar

from . import stop
from .errors import OutputError, OutputExists, UsageError
from .uris import real_path

T = TypeVar("T")

JOURNAL_VERSION = 1
#: Seconds between two rewrites of the journal, at most (it is rewritten when the run stops, too).
JOURNAL_PERIOD = 0.25


class Output:
    """The output under construction. Use as a context manager; ``file`` is the stream to write.

    Nothing is destroyed that the user did not name as the output: an existing file is replaced
    only with ``force``; a device or FIFO (``/dev/null``, a pipe a player reads) is written in
    place, never replaced; and an output that is one of the run's ``inputs`` or ``segments`` is
    refused (see ``check_target``). The temporary file is locked while a run writes it, which
    tells a crashed run's leftovers (removed) from another run's work in progress (refused).
    """

    def __init__(self, target: str | BinaryIO, plan: str, *, resume: bool = False, force: bool = False,
                 inputs: Iterable[str] = (), segments: Iterable[str] = ()):
        """``target``: a path, ``-`` for stdout, or a binary file open for writing (used as it is);
        ``segments``: see ``check_target``."""
        self._stream = sys.stdout.buffer if target == "-" else None if isinstance(target, str) else target
        self.target = target if isinstance(target, str) else getattr(target, "name", "the output file")
        if self._stream is not None and resume:
            raise UsageError("resume=True needs an output file by its path", option="resume")
        self.plan, self.resume, self.force = plan, resume, force
        self.parts_done = 0
        self.bytes_done = 0
        self.keys: dict[str, str] = {}  # key identity -> fingerprint, for parts written
        self.state: dict | None = None  # what a caller needs to continue (follow: the last sequence written)
        self.resumed = False
        self.file: BinaryIO
        self.in_place = False  # a device or FIFO, written where it is
        self._temp = ""
        self._journal = ""
        self._journal_due = 0.0  # monotonic time of the next journal rewrite: the first part is recorded at once
        if self._stream is None:
            self.in_place = check_target(self.target, force=force, inputs=inputs, segments=segments)

    def __enter__(self) -> Output:
        try:
            with stop.shielded():  # an interrupt now would leave a file no one knows of
                return self._open()
        except KeyboardInterrupt:  # it came while opening: what was made goes again
            if hasattr(self, "file"):
                self._close(KeyboardInterrupt)
            raise

    def _open(self) -> Output:
        if self._stream is not None:
            self.file = self._stream
            return self
        if self.in_place:
            if self.resume:
                raise OutputError(f"{self.target}: not a regular file, so resume=True cannot continue it",
                                  option="resume")
            self.file = _opened(self.target, lambda: os.open(self.target, os.O_WRONLY), "wb")
            return self
        target = os.path.abspath(self.target)
        folder, name = os.path.split(target)
        _remove_stale(folder, name)
        if not self.resume:
            fd, self._temp = _created(folder, lambda: tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder))
            _lock(fd, target)
            self.file = os.fdopen(fd, "wb")
            return self
        self._temp = os.path.join(folder, f".{name}.part")
        self._journal = self._temp + ".json"
        self.file = self._reopen() or self._create()
        return self

    @property
    def regular_file(self) -> bool:
        """Written to a file of our own (not stdout, a pipe, a device or a file object given)."""
        return self._stream is None and not self.in_place

    def _reopen(self) -> BinaryIO | None:
        """The partial file of an earlier run, if its journal matches this plan."""
        try:
            with open(self._journal, encoding="utf-8") as f:
                journal = json.load(f)
            fd = os.open(self._temp, os.O_RDWR | os.O_NOFOLLOW)  # never through a planted symlink
        except (OSError, ValueError):
            return None
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or journal.get("version") != JOURNAL_VERSION
                or journal.get("plan") != self.plan or info.st_size < journal.get("bytes", -1)):
            os.close(fd)
            return None
        _lock(fd, self.target)
        self.parts_done, self.bytes_done = journal["parts"], journal["bytes"]
        self.keys = dict(journal.get("keys", {}))
        self.state = journal.get("state")
        os.ftruncate(fd, self.bytes_done)  # bytes written after the last journal entry are redone
        os.lseek(fd, self.bytes_done, os.SEEK_SET)
        self.resumed = True
        return os.fdopen(fd, "wb")

    def _create(self) -> BinaryIO:
        for stale in (self._temp, self._journal, self._journal + ".new"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)  # unlink removes a symlink itself, never its target
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = _created(os.path.dirname(self._temp), lambda: os.open(self._temp, flags, 0o600))
        _lock(fd, self.target)
        self.parts_done = self.bytes_done = 0
        self.keys = {}
        self.state = None
        return os.fdopen(fd, "wb")

    def restart(self) -> None:
        """Drop what an earlier run wrote (its keys changed) and start from the first part."""
        self.file.seek(0)
        self.file.truncate()
        self.parts_done = self.bytes_done = 0
        self.keys = {}
        self.state = None
        self.resumed = False

    def part_written(self, size: int, key_identity: str | None, key_fingerprint: str | None,
                     state: dict | None = None) -> None:
        """Called once a part's bytes are all written: the journal moves on by one part.

        ``state`` (small, JSON) is kept with it, for a caller whose plan grows as it goes (follow).
        """
        self.parts_done += 1
        if state is not None:
            self.state = state
        self.bytes_done += size
        if key_identity and key_fingerprint:
            self.keys.setdefault(key_identity, key_fingerprint)
        if self._journal and time.monotonic() >= self._journal_due:
            self.file.flush()  # the journal never counts bytes the file does not have
            self._write_journal()
            self._journal_due = time.monotonic() + JOURNAL_PERIOD

    def _write_journal(self) -> None:
        temp = self._journal + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)  # whatever is there, a symlink included, is ours to replace
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": JOURNAL_VERSION, "plan": self.plan, "parts": self.parts_done,
                       "bytes": self.bytes_done, "keys": self.keys,
                       **({"state": self.state} if self.state is not None else {})}, f)
        os.replace(temp, self._journal)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        with stop.shielded():  # finish cleaning up, or publishing, before an interrupt is raised
            self._close(exc_type)

    def _close(self, exc_type: object) -> None:
        if self._stream is not None:
            if exc_type is None:
                self.file.flush()
            return
        if self.in_place and exc_type is not None:
            return  # a pipe or device: closing waits on a write its reader may never take
        closed = True
        try:
            self.file.close()
        except OSError as error:  # the last buffered bytes met a full disk
            closed = False
            if exc_type is None:
                self._discard()
                raise OutputError(f"{self.target}: {error.strerror or error}") from None
        if self.in_place:
            return
        if exc_type is None:
            self._publish()
        elif not self.resume:
            self._discard()
        elif closed and self._journal:  # every part written so far, for the next run to skip
            with contextlib.suppress(OSError):
                self._write_journal()

    def _publish(self) -> None:
        """Give the finished file its name; without ``force``, never over a file that appeared meanwhile."""
        target = os.path.abspath(self.target)
        os.chmod(self._temp, 0o666 & ~_umask())
        try:
            if self.force:
                os.replace(self._temp, target)
            else:
                os.link(self._temp, target)  # fails if the name was taken since the run began
                os.unlink(self._temp)
        except FileExistsError:
            self._discard()
            raise OutputError(f"{self.target}: created by someone else during the run; "
                              "nothing replaced (force=True replaces it)", option="force") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or os.path.lexists(target):
                self._discard()
                raise OutputError(f"{self.target}: {exc.strerror}") from None
            os.replace(self._temp, target)  # a file system without hard links
        if self._journal:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._journal)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._temp)


def check_target(target: str, *, force: bool = False, inputs: Iterable[str] = (),
                 segments: Iterable[str] = ()) -> bool:
    """Refuse an output that cannot or must not be written, before any work; True for a device
    or FIFO, which is written in place.

    ``segments``, files the run only reads, are compared with the output by name always, so that
    one missing now is never replaced if it comes during the run, and by file identity only when
    the output exists (a recording's 100,000 would each cost a ``stat`` for nothing). Other
    ``inputs``, which may be written later (a key cache), are compared both ways always. No
    input may be one of the files made and removed beside the output while it is written either."""
    segments, inputs = tuple(segments), tuple(inputs)
    written = os.path.abspath(target)  # what Output writes, ".." taken as text: checked as it is written
    folder = os.path.dirname(written)
    if not os.path.isdir(folder):
        raise OutputError(f"{target}: no such folder {folder}")
    try:
        info: os.stat_result | None = os.stat(written)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"{target}: {exc.strerror}") from None
    given = _input_at(written, info, inputs) or (info is not None and _input_at(written, info, segments))
    if given:
        raise OutputError(f"{target}: is an input of this run ({given}); choose another output")
    named = _named_like_output(written, (*inputs, *segments))
    if named and named[1]:  # a segment missing now, say
        raise OutputError(f"{target}: is an input of this run ({named[0]}); choose another output")
    if named:
        raise OutputError(f"{target}: an input of this run ({named[0]}) is named like the files made beside the "
                          "output while it is written; choose another output")
    if info is None:
        return False
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{target}: is a folder")
    if stat.S_ISSOCK(info.st_mode):
        raise OutputError(f"{target}: is a socket, which cannot be written as a file")
    if not stat.S_ISREG(info.st_mode):
        return True  # /dev/null, a FIFO, a terminal: written in place
    if not force:
        raise OutputExists(f"{target}: exists (force=True replaces it)", option="force")
    return False


def _input_at(target: str, info: os.stat_result | None, inputs: Iterable[str]) -> str | None:
    """The input that is the file at ``target`` (``info``, None where there is none yet), if any.

    Inputs that exist are told apart by their file identity: one ``stat`` each, for the 100,000
    segments of a long recording. An input that does not exist yet (a key cache to be made) can
    only be the output by its path.
    """
    real = None
    for given in inputs:
        if not given:
            continue
        try:
            found = os.stat(given)
        except (OSError, ValueError):  # missing, or a name no file can have
            real = real or os.path.realpath(target)
            with contextlib.suppress(ValueError):
                if real_path(given) == real:
                    return given
            continue
        if info is not None and (found.st_dev, found.st_ino) == (info.st_dev, info.st_ino):
            return given
    return None


def _named_like_output(written: str, paths: Iterable[str]) -> tuple[str, bool] | None:
    """The first of ``paths`` that names, in the folder the output is ``written`` in, the output
    itself (True) or one of the files made and removed beside it while it is written (False).
    Names are compared first, a string test for each of a recording's 100,000 segments; then
    folders, by identity, once each (as the fetcher finds them: ``sub/..`` through a link too)."""
    folder, name = os.path.split(written)
    try:
        here = os.stat(folder)
    except OSError:
        return None
    beside: dict[str, bool] = {}  # a folder as written -> whether it is the output's
    for given in paths:
        base = given[given.rfind(os.sep) + 1:]
        if not base or base != name and not _made_beside(base, name):
            continue
        where = given[:len(given) - len(base)] or os.curdir
        if where not in beside:
            try:
                there = os.stat(where)
                beside[where] = (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)
            except (OSError, ValueError):
                beside[where] = False
        if beside[where]:
            return given, base == name
    return None


def _made_beside(base: str, name: str) -> bool:
    """Whether ``base`` names a file that writing the output ``name`` makes or removes: its temporary
    file, a crashed run's, or the journal of ``resume`` (see ``Output._open`` and ``_remove_stale``)."""
    return base.startswith(f".{name}.") and base.endswith((".part", ".part.json", ".part.json.new"))


def check_folder(path: str, option: str) -> None:
    """A file written after the work (a report, a key export): its folder is checked before it."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: no such folder {folder}", option=option)
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder", option=option)


def _opened(target: str, opener: Callable[[], int], mode: str) -> BinaryIO:
    try:
        return os.fdopen(opener(), mode)  # type: ignore[return-value]  # "wb" gives a binary file
    except OSError as exc:
        raise OutputError(f"{target}: {exc.strerror}") from None


def _created(folder: str, create: Callable[[], T]) -> T:
    try:
        return create()
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror}") from None


def _lock(fd: int, target: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(f"{target}: another hlsdecrypt is writing it now") from None


def _remove_stale(folder: str, name: str) -> None:
    """Remove the temporary files that crashed runs (``kill -9``) left for this output; one that a
    live run holds locked means that run is writing the same output now: refused."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(f".{name}.") and entry.endswith(".part") and entry != f".{name}.part"):
            continue
        path = os.path.join(folder, entry)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
        except BlockingIOError:
            raise OutputError(f"{os.path.join(folder, name)}: another hlsdecrypt is writing it now") from None
        except OSError:
            pass
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class BackgroundWriter:
    """Writes on a thread of its own, so that the disk and the cipher work at the same time.

    At most ``depth`` items wait; a caller that reuses buffers needs ``depth + 2`` of them
    (those waiting, the one being written, the one being filled). ``call`` runs a function on
    the writer thread once everything queued before it is written. An error surfaces at the next
    ``write`` or ``call``, or at ``close``.

    Handing an item to another thread costs as much as copying 100 KiB, which a long recording of
    short segments would pay for every part. So chunks smaller than ``batch`` bytes, and calls,
    are gathered and handed over together once ``batch`` bytes are gathered or ``linger``
    seconds have passed since the last hand-over: a slow stream still hands over each part as it
    comes, a fast one in batches. With ``batch=0`` (the default) every chunk and call is handed
    over as it comes: what a pipe needs, whose reader may be a player waiting for the next part.
    """

    def __init__(self, out: BinaryIO, depth: int, *, batch: int = 0, linger: float = 0.02):
        self._out = out
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._batch_size, self._linger = batch, linger
        self._batch = bytearray()  # small chunks not handed over yet
        self._calls: list[Callable[[], None]] = []  # to run once the bytes queued before them are written
        self._handed = 0.0  # monotonic time of the last hand-over
        # A short chunk is copied into the batch and takes no place in the queue, so the queue alone
        # no longer bounds how many writes a caller makes while a chunk it handed over is still being
        # written: each such chunk is kept here (its write's number, its item's) until that is known done.
        self._depth, self._writes, self._items, self._finished = depth, 0, 0, 0
        self._held: collections.deque[tuple[int, int]] = collections.deque()
        self._progress = threading.Condition()
        self._waiting = False
        self._thread = threading.Thread(target=self._run, name="hlsdecrypt-writer", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._error:
            raise self._error
        self._writes += 1
        if len(chunk) >= self._batch_size:
            self._hand_over(chunk)
            self._held.append((self._writes, self._items))
        else:
            self._batch += chunk
            if len(self._batch) >= self._batch_size or time.monotonic() - self._handed >= self._linger:
                self._hand_over(None)
        # the caller reuses a chunk's buffer depth + 1 writes later (see the class docstring)
        while self._held and self._held[0][0] <= self._writes - self._depth - 1:
            self._wait_written(self._held.popleft()[1])

    def _wait_written(self, item: int) -> None:
        """Until the writer thread is done with the ``item``-th item handed over."""
        if self._finished >= item:
            return
        with self._progress:
            self._waiting = True
            try:
                while self._finished < item and self._thread.is_alive():
                    self._progress.wait(0.1)  # the timeout lets a stop through (a player paused on a pipe)
                    stop.check()
            finally:
                self._waiting = False

    def call(self, fn: Callable[[], None]) -> None:
        if self._error:
            raise self._error
        self._calls.append(fn)
        if not self._batch_size or time.monotonic() - self._handed >= self._linger:
            self._hand_over(None)

    def abandon(self) -> None:
        """Leave the thread to itself (a daemon): a run that failed or was stopped does not wait on
        a pipe whose reader stopped reading, which could be for ever."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def close(self) -> None:
        """Wait until everything queued is done; raise the writer's error, if any."""
        if self._batch or self._calls:
            self._hand_over(None)
        self._queue.put(None)
        self._thread.join()
        if self._error:
            raise self._error

    def _hand_over(self, chunk: bytes | bytearray | memoryview | None) -> None:
        """What is gathered, then ``chunk``, then the calls waiting: as one item."""
        item = (self._batch, chunk, self._calls)
        self._batch, self._calls = bytearray(), []
        self._queue.put(item)
        self._items += 1
        self._handed = time.monotonic()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                batch, chunk, calls = item
                try:
                    if batch:
                        self._out.write(batch)
                    if chunk is not None:
                        self._out.write(chunk)
                    for fn in calls:
                        fn()
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc
            self._item_done()
        self._item_done()  # the thread ends: no one waits on it any more

    def _item_done(self) -> None:
        with self._progress:
            self._finished += 1
            if self._waiting:
                self._progress.notify()

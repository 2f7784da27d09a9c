"""A process-wide stop: after Ctrl-C or SIGTERM every wait ends and every transfer is cut at once.

Worker threads cannot be interrupted by a signal; they block in socket reads, rate-limit waits
and retry back-offs. Each of those waits here (``pause``) or registers a way to cut it short
(``on_stop``), so that a stopped run ends within moments instead of when the slowest server
answers.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_stopped = threading.Event()
_hooks: dict[int, Callable[[], None]] = {}
_lock = threading.Lock()
_tokens = itertools.count()


class Stopped(KeyboardInterrupt):
    """Raised in any thread that waits or transfers after a stop; ends the run like Ctrl-C."""


def request_stop() -> None:
    """Stop everything: called from the signal handler, so it must never block for long."""
    _stopped.set()
    with _lock:
        hooks = list(_hooks.values())
    for hook in hooks:
        try:
            hook()
        except Exception:  # a hook that fails must not keep the others from running
            pass


def stopping() -> bool:
    return _stopped.is_set()


def check() -> None:
    if _stopped.is_set():
        raise Stopped()


def pause(seconds: float) -> None:
    """Sleep ``seconds``, or raise Stopped as soon as a stop is requested."""
    if seconds > 0 and _stopped.wait(seconds):
        raise Stopped()
    check()


def on_stop(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` when a stop is requested (at once if it was); returns the call that removes it."""
    token = next(_tokens)
    with _lock:
        _hooks[token] = hook
    if _stopped.is_set():
        hook()

    def remove() -> None:
        with _lock:
            _hooks.pop(token, None)

    return remove


_shield = threading.local()


@contextmanager
def shielded() -> Iterator[None]:
    """Let Ctrl-C wait while a file is made or given its name: between creating a temporary file
    and remembering it, an interrupt would leave it behind. It is raised when the block ends."""
    depth = getattr(_shield, "depth", 0)
    _shield.depth = depth + 1
    try:
        yield
    finally:
        _shield.depth = depth
        if depth == 0 and getattr(_shield, "deferred", False):
            _shield.deferred = False
            raise KeyboardInterrupt


def interrupt() -> None:
    """What a SIGINT/SIGTERM handler does: stop every thread, and raise KeyboardInterrupt here,
    unless this thread is shielded (then the shield raises it when it ends)."""
    request_stop()
    if getattr(_shield, "depth", 0):
        _shield.deferred = True
        return
    raise KeyboardInterrupt


def reset() -> None:
    """Allow work again after a stop: for a program that goes on after catching an interrupt."""
    _stopped.clear()

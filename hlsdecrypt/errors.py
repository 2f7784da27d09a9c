"""Every error hlsdecrypt raises, and the exit code each kind of failure maps to.

    HlsDecryptError                exit 1: unexpected
    ├── UsageError                 exit 2: bad command-line use
    ├── InputError                 exit 3: the playlist or its attributes are unusable
    │   └── UnsupportedEncryption          (SAMPLE-AES, unknown methods)
    ├── KeyUnavailable             exit 4: no key for a segment
    │   └── ApiError                       (GetHLSEncryptDataKey answered with an error)
    ├── KeyStoreError              exit 4: the fleet's shared key store (Redis) cannot be used; ends the run
    ├── SegmentError               exit 5: a segment could not be fetched or decrypted
    │   ├── FetchError
    │   └── DecryptError
    ├── VerificationFailed         exit 6: a verification check failed
    └── OutputError                exit 7: the output cannot be written (is an input, disk full, ...)
        └── OutputExists                   (there already, and not forced)

Messages are one line, name the playlist line, segment or KeyID concerned, and never carry
key material or credentials. An error about one part of a stream carries that part (``part``)
and names it first; an error about one argument names it as a Python caller spells it
(``option``), so that the command line can put its own flag in its place.
"""

from __future__ import annotations

from typing import Any


class HlsDecryptError(Exception):
    exit_code = 1

    def __init__(self, message: str = "", *, option: str | None = None, part: Any = None):
        super().__init__(message)
        self.message = message
        self.option = option  # the keyword argument the message is about, if one is
        self.part = part  # the playlist.Part concerned, if one is

    def __str__(self) -> str:
        return f"{self.part.label}: {self.message}" if self.part is not None else self.message


class UsageError(HlsDecryptError):
    exit_code = 2


class InputError(HlsDecryptError):
    exit_code = 3


class UnsupportedEncryption(InputError):
    pass


class KeyUnavailable(HlsDecryptError):
    exit_code = 4


class ApiError(KeyUnavailable):
    """An error answer of the key API; ``code`` and ``request_id`` are what support asks for."""

    def __init__(self, message: str, *, code: str = "", request_id: str = "", status: int = 0,
                 retryable: bool = False, retry_after: float = 0.0):
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class KeyStoreError(HlsDecryptError):
    """The shared key store and rate limit (``--key-store``) cannot be reached or used.

    Not a KeyUnavailable, which tells the key chain to ask the next source: a run that went on
    without the shared store would break the account's limit together with the fleet, so this
    one ends the run, batch or not.
    """

    exit_code = 4


class SegmentError(HlsDecryptError):
    exit_code = 5


class FetchError(SegmentError):
    pass


class DecryptError(SegmentError):
    pass


class VerificationFailed(HlsDecryptError):
    exit_code = 6


class OutputError(HlsDecryptError):
    """The output cannot be written where asked: it exists, names an input, or the disk refuses."""

    exit_code = 7


class OutputExists(OutputError):
    """The output is there already: refused without ``force``; a batch skips such a stream."""


EXIT_INTERRUPTED = 130
#: stdout was a pipe whose reader went away (``hlsdecrypt ... -o - | head``): ended quietly, as
#: ``cat`` ends on SIGPIPE.
EXIT_BROKEN_PIPE = 141


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 key``, ``2 keys``: messages count things, and count them in good English."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"

"""Every error hlsdecrypt raises, and the exit code each kind of failure maps to.

    HlsDecryptError                exit 1: unexpected
    ├── UsageError                 exit 2: bad command-line use
    ├── InputError                 exit 3: the playlist or its attributes are unusable
    │   └── UnsupportedEncryption          (SAMPLE-AES, unknown methods)
    ├── KeyUnavailable             exit 4: no key for a segment
    │   └── ApiError                       (GetHLSEncryptDataKey answered with an error)
    ├── SegmentError               exit 5: a segment could not be fetched or decrypted
    │   ├── FetchError
    │   └── DecryptError
    └── VerificationFailed         exit 6: a verification check failed

Messages are one line, name the playlist line, segment or KeyID concerned, and never carry
key material or credentials.
"""

from __future__ import annotations


class HlsDecryptError(Exception):
    exit_code = 1


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


class SegmentError(HlsDecryptError):
    exit_code = 5


class FetchError(SegmentError):
    pass


class DecryptError(SegmentError):
    pass


class VerificationFailed(HlsDecryptError):
    exit_code = 6


EXIT_INTERRUPTED = 130

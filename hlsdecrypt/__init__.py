"""hlsdecrypt: turn AES-128 encrypted HLS recordings into clear media, and check their encryption.

The Python API, as a QA suite uses it::

    from hlsdecrypt import key_chain, verify

    with key_chain(keys_file="keys.json", source="none") as keys:
        report = verify("rec/index.m3u8", keys=keys, expect_rotation=60)
    assert report.passed, report.table()

A live channel: ``follow(url, "live.ts", keys=keys, duration=3600)`` records an hour of it in the
clear while it is broadcast; ``verify_live(url, 600, keys=keys, expect_rotation_seconds=60)``
watches it for ten minutes.

The same keyword means the same thing in every function: ``keys`` a ``key_chain(...)``,
``fetcher`` a ``Fetcher`` (timeouts, retries, paths allowed), ``variant`` the choice in a master
playlist, ``key_id_param`` the key URI's query parameter that holds the KeyID. Every error is an
``HlsDecryptError``; its class says what went wrong (and which exit code the command line gives).

The names below are imported on first use, so that ``hlsdecrypt --version`` and runs on local
files do not pay for what they do not need.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    # what to do
    "decrypt": "pipeline", "verify": "verification", "verify_all": "verification", "verify_live": "verification",
    "encrypt": "encryption", "list_keys": "inventory", "export_keys": "inventory", "key_chain": "keys",
    "remux": "remuxing", "follow": "live",
    # what to do it with
    "KeyChain": "keys", "Fetcher": "fetch", "request_options": "http", "RequestOptions": "http", "Credentials": "credentials", "DataKey": "crypto",
    # what comes back
    "DecryptResult": "pipeline", "FollowResult": "live", "Report": "verification", "Check": "verification",
    "PartOutcome": "verification", "EncryptResult": "encryption", "KeyListing": "inventory", "KeyUse": "inventory",
    "write_json": "report", "write_junit": "report", "write_html": "html_report",
    # what can go wrong
    "HlsDecryptError": "errors", "UsageError": "errors", "InputError": "errors", "UnsupportedEncryption": "errors",
    "KeyUnavailable": "errors", "ApiError": "errors", "SegmentError": "errors", "FetchError": "errors",
    "DecryptError": "errors", "VerificationFailed": "errors", "OutputError": "errors", "OutputExists": "errors",
    "KeyStoreError": "errors",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hlsdecrypt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]

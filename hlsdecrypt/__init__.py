"""hlsdecrypt: turn AES-128 encrypted HLS recordings into clear media, and check their encryption.

The names below are imported on first use, so that ``hlsdecrypt --version`` and runs on local
files do not pay for what they do not need.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    "DataKey": "crypto",
    "DecryptResult": "pipeline",
    "Fetcher": "fetch",
    "HlsDecryptError": "errors",
    "KeyChain": "keys",
    "KeyFile": "keys",
    "KeyUri": "keys",
    "StaticKey": "keys",
    "decrypt": "pipeline",
    "load_media_playlist": "pipeline",
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

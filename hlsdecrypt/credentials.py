"""Volcengine access keys: where users keep them, and a type that never shows them.

Looked up as the official SDK's users keep them: ``VOLC_ACCESSKEY`` and ``VOLC_SECRETKEY`` in
the environment; else ``~/.volc/credentials`` (INI, ``[default]``, ``access_key_id`` and
``secret_access_key``); else ``~/.volc/config`` (JSON ``{"ak": ..., "sk": ...}``). A file given
with ``--credentials`` may be either format.
"""

from __future__ import annotations

import configparser
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import UsageError


@dataclass(frozen=True)
class Credentials:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    origin: str = ""  # where they were found, safe to show

    def __repr__(self) -> str:
        return f"Credentials(<hidden>, from {self.origin})"

    __str__ = __repr__


def find_credentials(path: str | None = None, environ: Mapping[str, str] = os.environ,
                     home: Path | None = None) -> Credentials | None:
    """The first credentials configured, or None; ``path`` (``--credentials``) must hold some."""
    if path:
        found = _from_file(Path(path))
        if found is None:
            raise UsageError(f"--credentials {path}: no access key and secret key found in it")
        return found
    ak, sk = environ.get("VOLC_ACCESSKEY", ""), environ.get("VOLC_SECRETKEY", "")
    if ak and sk:
        return Credentials(ak, sk, "VOLC_ACCESSKEY/VOLC_SECRETKEY")
    volc = (home or Path.home()) / ".volc"
    for candidate in (volc / "credentials", volc / "config"):
        if candidate.is_file():
            found = _from_file(candidate)
            if found:
                return found
    return None


def _from_file(path: Path) -> Credentials | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"credentials file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"credentials file {path}: not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise UsageError(f"credentials file {path}: not valid JSON") from None
        ak, sk = data.get("ak") or data.get("AccessKeyId"), data.get("sk") or data.get("SecretAccessKey")
    else:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            raise UsageError(f"credentials file {path}: not an INI file with a [default] section") from None
        section = parser["default"] if parser.has_section("default") else {}
        ak, sk = section.get("access_key_id"), section.get("secret_access_key")
    if ak and sk:
        return Credentials(str(ak), str(sk), str(path))
    return None

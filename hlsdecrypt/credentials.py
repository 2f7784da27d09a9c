"""Volcengine access keys: where users keep them, and a type that never shows them.

Looked up as the official SDKs' users keep them, the first complete set winning:

1. ``VOLC_ACCESSKEY`` and ``VOLC_SECRETKEY`` (the ``volcengine`` SDK, which has the live API);
2. ``VOLCENGINE_ACCESS_KEY``, ``VOLCENGINE_SECRET_KEY`` and, for temporary (STS) credentials,
   ``VOLCENGINE_SESSION_TOKEN`` (the newer ``volcengine-python-sdk`` and the Terraform provider);
3. ``~/.volc/credentials`` (INI, ``[default]``, ``access_key_id``, ``secret_access_key``,
   ``session_token``); else ``~/.volc/config`` (JSON ``{"ak", "sk", "session_token"}``, or the
   ``AccessKeyId``/``SecretAccessKey``/``SessionToken`` of an STS ``AssumeRole`` answer).

A file given with ``--credentials`` may be either format. The older pair comes first because it
did before the newer names were read: a user with both set keeps the keys (and the account's
rate-limit queue) they had, and gets a warning that the other set is unused. A session token is
only ever taken with the access key it was issued with, from the same place: a token paired
with another key would only be rejected by the server.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import UsageError

log = logging.getLogger("hlsdecrypt")

#: (access key, secret key, session token) variable names, in the order they are looked up.
ENV_SETS = (("VOLC_ACCESSKEY", "VOLC_SECRETKEY", ""),
            ("VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY", "VOLCENGINE_SESSION_TOKEN"))


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the session token of temporary (STS) credentials, if any."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    origin: str = ""  # where they were found, safe to show
    session_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        kind = "temporary, " if self.session_token else ""
        return f"Credentials(<hidden>, {kind}from {self.origin})"

    __str__ = __repr__


def find_credentials(path: str | None = None, environ: Mapping[str, str] = os.environ,
                     home: Path | None = None) -> Credentials | None:
    """The first credentials configured, or None; ``path`` (``--credentials``) must hold some."""
    if path:
        found = _from_file(Path(path))
        if found is None:
            raise UsageError(f"credentials {path}: no access key and secret key found in it", option="credentials")
        return found
    found = _from_environment(environ)
    if found:
        return found
    volc = (home or Path.home()) / ".volc"
    for candidate in (volc / "credentials", volc / "config"):
        if candidate.is_file():
            found = _from_file(candidate)
            if found:
                return found
    return None


def _from_environment(environ: Mapping[str, str]) -> Credentials | None:
    found: list[Credentials] = []
    for ak_name, sk_name, token_name in ENV_SETS:
        ak, sk = environ.get(ak_name, ""), environ.get(sk_name, "")
        token = environ.get(token_name, "") if token_name else ""
        if ak and sk:
            names = [ak_name, sk_name] + ([token_name] if token else [])
            found.append(Credentials(ak, sk, "/".join(names), token))
        elif token:
            log.warning("%s is set without %s and %s: ignored", token_name, ak_name, sk_name)
    if len(found) < 2:
        return found[0] if found else None
    first, second = found
    if first.access_key == second.access_key:
        # The same key twice: a temporary key only works with its token, wherever it was set.
        return second if second.session_token and not first.session_token else first
    log.warning("two different access keys in the environment: using %s, not %s", first.origin, second.origin)
    return first


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
        token = data.get("session_token") or data.get("SessionToken")
    else:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            raise UsageError(f"credentials file {path}: not an INI file with a [default] section") from None
        section = parser["default"] if parser.has_section("default") else {}
        ak, sk, token = section.get("access_key_id"), section.get("secret_access_key"), section.get("session_token")
    if ak and sk:
        return Credentials(str(ak), str(sk), str(path), str(token or ""))
    return None

"""What a URI or path names: a URL or a local file, and the short name of the stream it holds.

Plain string work, shared by the playlist parser, the fetcher and the reports, so that none
of them imports another for it.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: "C:" is a drive
_GENERIC_STEMS = ("index", "playlist", "prog_index", "master", "")


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower-cased, or "" for a path (without urllib, which rejects some URIs)."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def is_url(uri: str) -> bool:
    return scheme_of(uri) in ("http", "https")


def stream_name(source: str) -> str:
    """A short name for a stream: ``rec1/index.m3u8`` -> ``rec1``, ``https://h/live/cam2.m3u8?sig=…`` -> ``cam2``.

    Only letters, digits, ``_`` and ``-``: it names output files and JUnit classes (which CI
    systems split at dots), and a query string may carry a signature that belongs in neither.
    """
    path = urlsplit(source).path if is_url(source) else source
    path = path.rstrip("/")
    stem = posixpath.splitext(posixpath.basename(path))[0]
    if stem in _GENERIC_STEMS and posixpath.dirname(path):
        stem = posixpath.basename(posixpath.dirname(path)) or stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "stream"

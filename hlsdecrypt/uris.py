"""What a URI or path names: a URL or a local file (and where it really is), and the short name of the stream it holds.

Plain string work, shared by the playlist parser, the fetcher and the reports, so that none
of them imports another for it.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from urllib.parse import urlsplit

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: "C:" is a drive
_GENERIC_STEMS = ("index", "playlist", "prog_index", "master", "")


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower-cased, or "" for a path (without urllib, which rejects some URIs)."""
    if ":" not in uri:  # most paths: asked for every part, several times
        return ""
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


def real_path(path: str) -> str:
    """``os.path.realpath``, with each folder resolved once: a recording's 100,000 segments share a
    folder, and resolving it costs a system call per path component. The file itself is resolved
    only when it is a link. Raises ValueError for a path with a NUL byte, as realpath does."""
    candidate = resolved_folder(path)
    return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def resolved_folder(path: str) -> str:
    """``path`` made absolute, its folder's links resolved (once per folder), its name as it is;
    a name that is no file's (``""``, ``.``, ``..``) is resolved too."""
    # absolute, but not normalised: "link/../x" means the link's parent, which only resolving tells
    folder, _, name = (path if path.startswith(os.sep) else os.path.join(os.getcwd(), path)).rpartition(os.sep)
    if name in ("", os.curdir, os.pardir):
        return os.path.realpath(path)
    return as_folder(_real_folder(folder or os.sep)) + name


def as_folder(path: str) -> str:
    """``path`` with a separator at its end, for a file name to follow."""
    return path if path.endswith(os.sep) else path + os.sep


@functools.lru_cache(maxsize=256)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)

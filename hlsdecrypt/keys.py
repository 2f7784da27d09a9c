"""Key sources, and the chain that asks them in order, once per distinct key.

A source answers ``lookup(ref)`` with a DataKey, ``None`` when the key is not its business
(no KeyID, not in its file), or raises KeyUnavailable when it should have had the key but
failed. The chain resolves keys on one background thread, in order of first use, so that a
slow or rate-limited source works ahead of the decryptor instead of blocking it per segment.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol
from urllib.parse import unquote_to_bytes

from .credentials import Credentials, find_credentials
from .crypto import DataKey
from .defaults import DEFAULT_ENDPOINT, KEY_SOURCES
from .errors import HlsDecryptError, KeyUnavailable, UsageError
from .fetch import MAX_KEY_FILE, Fetcher
from .keystore import KeyCache, read_keys
from .playlist import KeyRef, Part
from .uris import is_url

if TYPE_CHECKING:
    from .fleet import Fleet
    from .api import ApiKeySource

log = logging.getLogger("hlsdecrypt")


class KeySource(Protocol):
    name: str

    def lookup(self, ref: KeyRef) -> DataKey | None: ...


class KeyKeeper(Protocol):
    """Where proved keys are kept: a key cache file, a fleet's store, or both."""

    def store(self, ref: KeyRef, key: DataKey) -> None: ...


class StaticKey:
    """One key for every encrypted segment (``key=``, ``--key``)."""

    name = "the given key"

    def __init__(self, key: DataKey):
        self._key = key

    def lookup(self, ref: KeyRef) -> DataKey | None:
        return self._key


class KeyFile:
    """A JSON object mapping KeyIDs or key URIs to 32 hex digits (``keys_file=``, ``--keys``)."""

    def __init__(self, path: str):
        self.name = f"keys file {path}"
        try:
            self._keys = read_keys(path, "keys_file")
        except FileNotFoundError:
            raise UsageError(f"keys_file {path}: no such file", option="keys_file") from None

    @property
    def keys(self) -> dict[str, DataKey]:
        return dict(self._keys)

    def lookup(self, ref: KeyRef) -> DataKey | None:
        for name in (ref.key_id, ref.uri, ref.resolved_uri):
            if name and name in self._keys:
                return self._keys[name]
        return None


class KeyUri:
    """The key URI itself: an http(s) key server, a key file next to a local playlist, or a
    ``data:`` URI that holds the key."""

    name = "key URI"

    def __init__(self, fetcher: Fetcher):
        self._fetcher = fetcher

    def lookup(self, ref: KeyRef) -> DataKey | None:
        if ref.inline:
            return _inline_key(ref)
        try:
            data = self._fetcher.read_key(ref.resolved_uri)
        except HlsDecryptError as exc:
            raise KeyUnavailable(str(exc)) from None
        if len(data) != 16:
            more = "more than " if len(data) >= MAX_KEY_FILE else ""
            raise KeyUnavailable(f"{ref.resolved_uri}: a key is 16 bytes, this one has {more}{len(data)}")
        return DataKey(data)


def _inline_key(ref: KeyRef) -> DataKey:
    """The key in a ``data:`` URI (RFC 2397), read as yt-dlp reads it: percent-decoded, then
    base64-decoded when the media type ends in ``;base64``. Messages name its line, never its text."""
    media_type, comma, payload = ref.uri[len("data:"):].partition(",")
    data = unquote_to_bytes(payload)
    if media_type.strip().lower().endswith(";base64"):
        # lenient, as browsers are: URL-safe letters, line breaks, missing padding
        letters = re.sub(rb"[^A-Za-z0-9+/]", b"", data.replace(b"-", b"+").replace(b"_", b"/"))
        try:
            data = base64.b64decode(letters + b"=" * (-len(letters) % 4))
        except (binascii.Error, ValueError):
            raise KeyUnavailable(f"{ref.name}: its data: URI is not base64") from None
    if not comma or len(data) != 16:
        raise KeyUnavailable(f"{ref.name}: its data: URI holds {len(data) if comma else 'no'} bytes; a key is 16")
    return DataKey(data)


class NoCredentials:
    """Stands where the API would be when no access keys are configured, so that a KeyID no
    other source has is reported as what it is, not as a failure of the key URI alone."""

    name = "GetHLSEncryptDataKey"

    def lookup(self, ref: KeyRef) -> DataKey | None:
        if ref.key_id is None:
            return None
        raise KeyUnavailable("not asked: no access keys found (set VOLC_ACCESSKEY and VOLC_SECRETKEY, "
                             "write ~/.volc/credentials, or give credentials FILE)", option="credentials")


@dataclass(frozen=True)
class KeyProgress:
    """How far the chain is with the keys of the parts last handed to ``prefetch``: for a display,
    since two minutes of API calls would otherwise look like a hang."""

    resolved: int
    needed: int
    asking: str = ""  # the source asked now, with its pace where it has one: "API: 1 request/s"
    rate: float | None = None  # requests per second of that source, when it is rate-limited


class KeyChain:
    """Asks each source in turn for each distinct key (by KeyID, else by key URI), once."""

    def __init__(self, sources: Iterable[KeySource], *, cache: KeyKeeper | None = None,
                 stop_after_failure: bool = True):
        """``cache``, when given, keeps every key found by a source other than itself once the
        key has proved itself on a part (``confirm``); put it among ``sources`` too, where it
        should be asked."""
        self.sources = list(sources)
        self._cache = cache
        self._stop_after_failure = stop_after_failure
        self._failed: str | None = None
        self._futures: dict[str, Future[DataKey]] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hlsdecrypt-keys")
        self.resolved: dict[str, DataKey] = {}  # key identity -> key, once found
        self.supplied_by: dict[str, str] = {}  # key identity -> the name of the source that had it
        self._unproven: dict[str, tuple[KeyRef, DataKey]] = {}  # found, not yet cached
        self._wanted: tuple[str, ...] = ()  # identities of the keys the last prefetch asked for
        self._asking: KeySource | None = None  # the source the key thread waits on now

    def prefetch(self, parts: Iterable[Part]) -> None:
        """Start resolving the keys of ``parts`` in order of first use."""
        users: dict[str, tuple[KeyRef, list[Part]]] = {}
        last: KeyRef | None = None
        for part in parts:  # a recording's parts come in runs under one key: looked up once a run
            key = part.key
            if key is None:
                continue
            if key is not last:
                last, users_of_key = key, (users.get(key.identity) or users.setdefault(key.identity, (key, [])))[1]
            users_of_key.append(part)
        self._wanted = tuple(users)
        for ref, group in users.values():
            self._future(ref, group)

    def progress(self) -> KeyProgress:
        """Keys of the last ``prefetch`` resolved so far, and the source being asked; safe from any thread."""
        wanted, source = self._wanted, self._asking
        resolved = sum(identity in self.resolved for identity in wanted)
        if source is None or resolved == len(wanted):
            return KeyProgress(resolved, len(wanted))
        rate = getattr(source, "rate", None)  # a source with a rate limit: the API
        if rate:
            return KeyProgress(resolved, len(wanted), f"API: {_per_second(rate)}", rate)
        return KeyProgress(resolved, len(wanted), source.name)

    def get(self, ref: KeyRef) -> DataKey:
        found = self.resolved.get(ref.identity)  # asked for every part: spare it the lock once the key is in
        return found if found is not None else self._future(ref, None).result()

    def peek(self, ref: KeyRef) -> DataKey | None:
        """The key of ``ref`` if already resolved, without waiting: for fingerprints in journals."""
        return self.resolved.get(ref.identity)

    def confirm(self, ref: KeyRef) -> None:
        """The key of ``ref`` decrypted a part to valid media: now it may enter the cache.

        A wrong key cached would fail every later run the same way, until someone edits the file.
        """
        if ref.identity in self._unproven:
            with self._lock:
                pending = self._unproven.pop(ref.identity, None)
            if pending and self._cache:
                self._cache.store(*pending)

    def next_stream(self) -> None:
        """Between the streams of a batch: forget failures and keys not resolved yet; keep the rest."""
        with self._lock:
            self._failed = None
            self._wanted = ()
            for identity, future in list(self._futures.items()):
                if not future.done() or future.exception() is not None:
                    future.cancel()
                    del self._futures[identity]

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._worker.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> KeyChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return ", ".join(getattr(s, "description", s.name) for s in self.sources) or "none"

    def _future(self, ref: KeyRef, users: list[Part] | None) -> Future[DataKey]:
        with self._lock:
            future = self._futures.get(ref.identity)
            if future is None:
                future = self._worker.submit(self._resolve, ref, users)
                self._futures[ref.identity] = future
            return future

    def _resolve(self, ref: KeyRef, users: list[Part] | None) -> DataKey:
        if self._failed:  # the run is failing anyway: spare the key services the rest
            raise KeyUnavailable(f"{ref.name} (line {ref.line}): not asked for, since {self._failed} failed")
        failures = []
        for source in self.sources:
            self._asking = source
            try:
                key = source.lookup(ref)
            except KeyUnavailable as exc:
                failures.append(f"{source.name}: {exc}")
                continue
            finally:
                self._asking = None
            if key is not None:
                log.debug("%s: key from %s", ref.name, source.name)
                self.supplied_by[ref.identity] = source.name
                self.resolved[ref.identity] = key
                if self._cache and source is not self._cache:
                    with self._lock:
                        self._unproven[ref.identity] = (ref, key)
                return key
        why = "; ".join(failures) or f"no source has it (tried {', '.join(s.name for s in self.sources) or 'none'})"
        needed = f"; needed by {_summarise(users)}" if users else ""
        if self._stop_after_failure:
            self._failed = ref.name
        raise KeyUnavailable(f"{ref.name} (line {ref.line}): {why}{needed}")


def key_chain(*, key: str | DataKey | None = None, keys_file: str | None = None, cache: str | None = None,
              store: str | None = None, source: str = "auto", credentials: str | Credentials | None = None,
              endpoint: str | None = None, region: str | None = None, rate: float = 1.0, timeout: float = 10.0,
              fetcher: Fetcher | None = None, stop_after_failure: bool = True) -> KeyChain:
    """The key sources in their documented order: ``key`` (32 hex digits), ``keys_file`` (JSON of
    KeyID or key URI -> hex), ``cache`` (a key cache file), ``store`` (a fleet's Redis, by URL:
    its keys, and the account's rate limit for every machine), then by ``source``:

    - ``auto``: the live service's API for KeyIDs when access keys are configured (``credentials``:
      a file, a Credentials, or found where the official SDK's users keep them), then the key URI;
    - ``api``: the API only (access keys required); ``uri``: the key URI only; ``none``: neither.

    ``endpoint``, ``region`` and ``rate`` (requests per second for the account, shared by every
    process) configure the API; ``fetcher`` reads key URIs. Use it as a context manager.
    """
    if source not in KEY_SOURCES:
        raise UsageError(f"source is one of {', '.join(KEY_SOURCES)}, not {source!r}", option="source")
    sources: list[KeySource] = []
    if key is not None:
        sources.append(StaticKey(key if isinstance(key, DataKey) else _hex_key(key)))
    if keys_file:
        sources.append(KeyFile(keys_file))
    key_cache = KeyCache(cache) if cache else None
    if key_cache:
        sources.append(key_cache)
    fleet = None
    if store:
        from .fleet import open_store  # redis-py only for those who use it

        fleet = open_store(store)
        sources.append(fleet.store)
    found = None
    if source in ("auto", "api"):
        found = credentials if isinstance(credentials, Credentials) else find_credentials(credentials)
        if source == "api" and found is None:
            raise UsageError("source 'api' needs access keys: set VOLC_ACCESSKEY and VOLC_SECRETKEY, "
                             "or give credentials FILE", option="credentials")
    if found:
        sources.append(_api_source(found, endpoint, region, rate, timeout, fleet))
    elif source == "auto":
        sources.append(NoCredentials())  # so that a KeyID's failure says why the API was not asked
    if source in ("auto", "uri"):
        sources.append(KeyUri(fetcher or Fetcher()))
    chain = KeyChain(sources, cache=fleet.keep_in(key_cache) if fleet else key_cache,
                     stop_after_failure=stop_after_failure)
    log.debug("key sources, in order: %s", chain.describe())
    return chain


def _hex_key(text: str) -> DataKey:
    try:
        return DataKey.from_hex(text)
    except ValueError:
        raise UsageError("key wants 32 hex digits", option="key") from None


def _api_source(credentials: Credentials, endpoint: str | None, region: str | None, rate: float,
                timeout: float, fleet: Fleet | None) -> ApiKeySource:
    from .api import ApiKeySource, endpoint_from_env, region_for  # only with access keys: they are what it needs

    if rate <= 0:
        raise UsageError("rate must be positive", option="rate")
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    if not is_url(endpoint) or "[" in endpoint:
        raise UsageError(f"endpoint {endpoint}: want an http(s) URL such as {DEFAULT_ENDPOINT}", option="endpoint")
    # with a fleet's store, one limit for every machine of the account, not one per machine
    limiter = fleet.limiter(rate, credentials.access_key, endpoint, timeout) if fleet else None
    return ApiKeySource(credentials, endpoint=endpoint, region=region or region_for(endpoint), rate=rate,
                        timeout=timeout, limiter=limiter)


def _per_second(rate: float) -> str:
    return f"{rate:g} request{'' if rate == 1 else 's'}/s"


def _summarise(parts: list[Part]) -> str:
    """``segments 12-15, 18 and the init section``: runs of sequence numbers, compactly."""
    runs: list[list[int]] = []
    for seq in sorted(p.sequence for p in parts if p.sequence is not None):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    text = f"segment{'s' if len(parts) > 1 else ''} {text}" if runs else ""
    if any(p.is_init for p in parts):
        text = f"{text} and the init section" if text else "the init section"
    return text

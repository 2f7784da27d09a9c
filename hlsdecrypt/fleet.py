"""What the machines of a fleet share through Redis: the keys they found, and the account's rate limit.

``--key-store redis://[:password@]host:port/db`` (``rediss://`` for TLS) names one Redis for
every machine working on one account's recordings. Each KeyID's key is written there once
(set-if-absent), after it proved itself on a segment, and read by every machine before any
asks the API; the API's rate limit is kept there too (``redis_ratelimit``), so that N machines
together never send faster than one would.

Keys are secrets. With ``HLSDECRYPT_KEY_STORE_SECRET`` set (the same on every machine), each
is sealed with AES-GCM under a key derived from it, bound to its KeyID, and stored under an
HMAC of the KeyID: whoever reads the Redis sees neither keys nor KeyIDs. A marker in the store
says whether its keys are sealed and under which secret, so a machine with a different secret,
or none, stops at once instead of asking the API for keys the fleet already has.

Redis that cannot be reached, or that fails mid-run, ends the run (``KeyStoreError``, exit 4):
a machine that went on with a per-machine limit would break the account's limit together with
the others. redis-py is imported only here, and only when a store is asked for (the ``redis``
extra).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import unquote, urlsplit

from . import stop
from .crypto import DataKey, seal, unseal
from .errors import KeyStoreError, UsageError
from .playlist import KeyRef

if TYPE_CHECKING:
    from .keystore import KeyCache
    from .redis_ratelimit import RedisRateLimiter

log = logging.getLogger("hlsdecrypt")

from .defaults import KEY_STORE_ENV  # noqa: E402,F401 - the name users look for here too
SECRET_ENV = "HLSDECRYPT_KEY_STORE_SECRET"
SCHEMES = ("redis", "rediss")
#: Every name hlsdecrypt writes in Redis starts so; a database (``/1``) keeps fleets apart.
PREFIX = "hlsdecrypt:"
MARKER = PREFIX + "store"
#: A store that does not answer within these is as good as down: the run ends rather than hangs.
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 5.0
#: One more try after a dropped connection (a Redis restart, an idle connection cut by a firewall).
RETRIES = 1
_SALT = b"hlsdecrypt key store v1"
_MARKER_TEXT = b"hlsdecrypt sealed key store"


def display_url(url: str) -> str:
    """The URL without its password or query (which may hold TLS key passwords): for messages."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--key-store {parts.scheme}://{parts.hostname or ''}: bad port") from None
    auth = parts.username or ""
    if parts.password is not None:
        auth += ":***"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{auth + '@' if auth else ''}{host}{f':{port}' if port else ''}{parts.path}"


class Connection:
    """One redis-py client for the process (its pool is shared by threads); every failure of it
    becomes a one-line KeyStoreError that names the store without its password."""

    def __init__(self, url: str):
        self.name = display_url(url)
        if urlsplit(url).scheme not in SCHEMES:
            raise UsageError(f"--key-store {self.name}: want a redis:// or rediss:// URL")
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise UsageError("--key-store needs redis-py: pip install 'hlsdecrypt[redis]'") from None
        password = urlsplit(url).password or ""
        self._secrets = [text for text in (password, unquote(password)) if text]
        self._failures: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        try:
            self.client: Any = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                                    socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), RETRIES))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--key-store {self.name}: {self._reason(exc)}") from None

    def __repr__(self) -> str:
        return f"Connection({self.name})"

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn what redis-py raises while ``doing`` into a KeyStoreError (or Stopped, after Ctrl-C)."""
        try:
            yield
        except self._failures as exc:
            stop.check()  # a connection cut by a stop is the stop, not a failure of the store
            raise KeyStoreError(f"--key-store {self.name}: {doing}: {self._reason(exc)}") from None

    def _reason(self, exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _Seal:
    """The keys derived from the fleet's secret: one seals values, one names them.

    scrypt, because a secret people choose may be guessable, and a sealed value read from Redis
    would let anyone test guesses offline; the salt is fixed, since every machine must derive
    the same keys without asking anyone.
    """

    def __init__(self, secret: str):
        material = hashlib.scrypt(secret.encode(), salt=_SALT, n=2 ** 14, r=8, p=1, dklen=64)
        self._sealing, self._naming = material[:32], material[32:]

    def __repr__(self) -> str:
        return "_Seal(<hidden>)"

    def name(self, key_id: str) -> str:
        return hmac.new(self._naming, key_id.encode(), "sha256").hexdigest()[:32]

    def seal(self, data: bytes, context: bytes) -> bytes:
        return b"sealed:" + base64.b64encode(seal(data, self._sealing, context))

    def unseal(self, value: bytes, context: bytes) -> bytes | None:
        if not value.startswith(b"sealed:"):
            return None
        try:
            return unseal(base64.b64decode(value[len(b"sealed:"):], validate=True), self._sealing, context)
        except ValueError:
            return None


class RedisKeyStore:
    """``--key-store URL``: keys by KeyID, written once (SET NX), read by every machine.

    Used like ``KeyCache``: ``lookup(ref)`` answers the key or None, ``store(ref, key)`` keeps a
    key that proved itself. A stored value that does not open is an error, never a wrong key.
    """

    def __init__(self, connection: Connection, secret: str | None = None):
        self._connection = connection
        self._seal = _Seal(secret) if secret else None
        self.name = f"--key-store {connection.name}"
        self._check_marker()

    def __repr__(self) -> str:
        return f"RedisKeyStore({self._connection.name}, {'sealed' if self._seal else 'not sealed'})"

    @property
    def sealed(self) -> bool:
        return self._seal is not None

    def lookup(self, ref: KeyRef) -> DataKey | None:
        if not ref.key_id:
            return None
        with self._connection.errors(f"reading KeyID {ref.key_id}"):
            value = self._connection.client.get(self._name(ref.key_id))
        return None if value is None else self._open(ref.key_id, value)

    def store(self, ref: KeyRef, key: DataKey) -> None:
        if not ref.key_id:
            return
        with self._connection.errors(f"storing KeyID {ref.key_id}"):
            # set-if-absent: the first machine's key stays; any other proved itself on the same KeyID too
            self._connection.client.set(self._name(ref.key_id), self._close(ref.key_id, key), nx=True)

    def _name(self, key_id: str) -> str:
        """A hash of the KeyID, so that listing the store does not list the recordings' KeyIDs."""
        digest = self._seal.name(key_id) if self._seal else hashlib.sha256(b"hlsdecrypt key\0" + key_id.encode())\
            .hexdigest()[:32]
        return f"{PREFIX}key:{digest}"

    @staticmethod
    def _context(key_id: str) -> bytes:
        return b"hlsdecrypt key\0" + key_id.encode()

    def _close(self, key_id: str, key: DataKey) -> bytes:
        if self._seal:
            return self._seal.seal(key.reveal(), self._context(key_id))
        return b"plain:" + key.reveal().hex().encode()

    def _open(self, key_id: str, value: bytes) -> DataKey:
        raw: bytes | None = None
        if self._seal:
            raw = self._seal.unseal(value, self._context(key_id))
        elif value.startswith(b"plain:"):
            try:
                raw = bytes.fromhex(value[len(b"plain:"):].decode("ascii"))
            except ValueError:
                raw = None
        if raw is None or len(raw) != 16:
            why = (f"does not unseal with {SECRET_ENV} (another secret, or an altered value)" if self._seal
                   else f"is sealed: set {SECRET_ENV}" if value.startswith(b"sealed:") else "is not a key")
            raise KeyStoreError(f"{self.name}: the stored key of KeyID {key_id} {why}")
        return DataKey(raw)

    def _check_marker(self) -> None:
        """The first machine marks the store sealed (under its secret) or not; the others must agree."""
        ours = self._seal.seal(_MARKER_TEXT, MARKER.encode()) if self._seal else b"plain"
        with self._connection.errors("checking the store"):
            self._connection.client.set(MARKER, ours, nx=True)
            theirs = self._connection.client.get(MARKER) or ours
        sealed_there = theirs.startswith(b"sealed:")
        if self._seal and sealed_there and self._seal.unseal(theirs, MARKER.encode()) != _MARKER_TEXT:
            raise KeyStoreError(f"{self.name}: {SECRET_ENV} is not the secret this store's keys are sealed with")
        if self._seal and not sealed_there:
            raise KeyStoreError(f"{self.name}: this store keeps keys unsealed, yet {SECRET_ENV} is set: give every "
                                "machine the same secret, or use another store (another database, e.g. /1)")
        if not self._seal and sealed_there:
            raise KeyStoreError(f"{self.name}: this store's keys are sealed: set {SECRET_ENV} to the fleet's secret")


class KeepBoth:
    """``--key-cache FILE`` beside ``--key-store``: a key proved here is kept in both, so the file
    stays a complete local copy and the fleet gets what the file had."""

    def __init__(self, cache: "KeyCache", store: RedisKeyStore):
        self.cache, self.shared = cache, store
        self.name = f"{cache.name} and {store.name}"

    def store(self, ref: KeyRef, key: DataKey) -> None:
        self.cache.store(ref, key)
        self.shared.store(ref, key)


@dataclass(frozen=True)
class Fleet:
    """What ``open_store`` gives: the shared key store, and the account limits kept beside it."""

    store: RedisKeyStore
    connection: Connection = field(repr=False)

    def keep_in(self, cache: "KeyCache | None") -> "RedisKeyStore | KeepBoth":
        """Where the key chain keeps proved keys: the store, and ``--key-cache`` too when given."""
        return KeepBoth(cache, self.store) if cache else self.store

    def limiter(self, rate: float, access_key: str, endpoint: str, timeout: float) -> "RedisRateLimiter":
        """The account's limit for ``ApiKeySource(limiter=...)``, shared by every machine of the fleet.

        The lease outlasts the API client's deadline (3 x ``timeout``, see ``api``): only a
        holder that stopped or died keeps the turn that long."""
        from .redis_ratelimit import RedisRateLimiter

        return RedisRateLimiter(self.connection, rate, f"{access_key}@{urlsplit(endpoint).netloc}",
                                lease=3 * timeout + 5)


def open_store(url: str, *, secret: str | None = None) -> Fleet:
    """Connect to the fleet's Redis at ``url`` and check it now, so that a store that cannot be
    reached, or a secret that differs from the fleet's, ends the run before any work.
    ``secret``: default ``$HLSDECRYPT_KEY_STORE_SECRET`` (empty: keys are not sealed)."""
    connection = Connection(url)
    with connection.errors("connecting"):
        connection.client.ping()
    store = RedisKeyStore(connection, secret if secret is not None else os.environ.get(SECRET_ENV))
    log.debug("key store and rate limit shared through %s (keys %s)", connection.name,
              "sealed" if store.sealed else "not sealed")
    return Fleet(store, connection)

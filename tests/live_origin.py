"""A live channel on 127.0.0.1 for the follow tests: a sliding window over a real stream, on a fast clock.

The media are the clear segments of ``fixtures/clear`` (made by ffmpeg), taken in turn: segment
``s`` carries ``clear[(s - start) % 6]``. Each is encrypted here, with pycryptodome, never with
hlsdecrypt, the way the live service does it: AES-128-CBC, a key per ``rotate`` segments whose
KeyID is the ``key_id=`` of its key URI, an all-zero explicit IV, an
``EXT-X-PROGRAM-DATE-TIME`` at each key tag. A key's DataKey is served by the fake API
(``FakeLiveApi`` over ``LateKeys``), which answers ResourceNotFound for a while after the key
is first asked for.

Time is computed on each request from the monotonic clock: no publishing thread can fall
behind on a busy machine. The clock starts with the first playlist request, so that a client
always begins with the ``preroll`` segments, however slowly it started. Faults are set by
sequence number, so that what is published is always the same; only when it is published
depends on the clock:

- ``stall_at={s: seconds}``: nothing new for ``seconds`` before ``s`` is published;
- ``skip_at={s: n}``: ``s`` to ``s + n - 1`` are never published; the window restarts at ``s + n``
  (not before a playlist listing ``s - 1`` was served: the client sees exactly that jump);
- ``back_at={s: n}``: once ``s`` is published, the next playlist request gets a playlist that
  ends ``n`` segments before the last one served (a stale edge of a CDN);
- ``clear_at={s, ...}``: these go out clear, under ``METHOD=NONE``;
- ``discontinuity_at={s, ...}``: an ``EXT-X-DISCONTINUITY`` before these;
- ``end_at=s``: ``s`` is the last; the playlist then ends with ``EXT-X-ENDLIST``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter, deque
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from servers import LoopbackServer, QuietHandler

CLEAR = Path(__file__).resolve().parent.parent / "fixtures" / "clear"
CLEAR_SEGMENTS = [(CLEAR / f"seg{i}.ts").read_bytes() for i in range(6)]
ZERO_IV = bytes(16)
#: The live service writes the customer's key service here; never asked (keys come from the API).
KEY_URI = "https://kms.example.com/get_hls_enc_key?key_id={key_id}"
EPOCH = datetime(2024, 5, 7, 17, 59, 2, 927000, tzinfo=timezone(timedelta(hours=8)))


def key_id(index: int) -> str:
    """26 hex digits, as the live service's KeyIDs have."""
    return hashlib.sha256(f"live key {index}".encode()).hexdigest()[:26]


def key_value(index: int) -> bytes:
    return hashlib.sha256(f"live key value {index}".encode()).digest()[:16]


class LateKeys(dict):
    """KeyID -> DataKey (hex) for FakeLiveApi; each answered only ``delay`` seconds after it was
    first asked for (ResourceNotFound before), as a key may lag its rotation."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.delay = delay
        self.delays: dict[str, float] = {}  # a delay of its own for some keys
        self.first_asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, kid, default=None):
        now = time.monotonic()
        with self._lock:
            first = self.first_asked.setdefault(kid, now)
        if now - first < self.delays.get(kid, self.delay):
            return default
        return super().get(kid, default)


class LiveOrigin(LoopbackServer):
    """``/live/index.m3u8`` and ``/live/seg_<s>.ts``: a segment is served while it is among the last
    ``window`` published (404 after), listed or not, as CDNs keep files a while after the playlist
    drops them."""

    def __init__(self, *, period: float = 0.1, window: int = 30, rotate: int = 4, start: int = 1000,
                 preroll: int = 3, keys: LateKeys | None = None, stall_at: dict[int, float] | None = None,
                 skip_at: dict[int, int] | None = None, back_at: dict[int, int] | None = None,
                 clear_at: set[int] | frozenset[int] = frozenset(),
                 discontinuity_at: set[int] | frozenset[int] = frozenset(), end_at: int | None = None):
        self.period, self.window_size, self.rotate, self.start = period, window, rotate, start
        self.keys = keys if keys is not None else LateKeys()
        self.stall_at, self.skip_at, self.back_at = dict(stall_at or {}), dict(skip_at or {}), dict(back_at or {})
        self.clear_at, self.discontinuity_at, self.end_at = set(clear_at), set(discontinuity_at), end_at
        self.hits: Counter[int] = Counter()  # segment fetches, by sequence
        self.playlists_served = 0
        self.published: list[int] = []  # every sequence published, in order
        self.stale_served = 0
        self._window: deque[int] = deque()  # listed in the playlist
        self._served: deque[int] = deque()  # still fetchable
        self._next = start
        self._ended = False
        self._back = 0  # serve the next playlist this many segments behind the last one served
        self._served_end: int | None = None
        self._cipher_text: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._preroll = preroll
        self._next_at: float | None = None  # None until the first playlist request
        super().__init__(quiet=True)

    def __enter__(self):
        with self._lock:
            for _ in range(self._preroll):  # a channel that has been running for a moment
                self._publish()
        return super().__enter__()

    @property
    def playlist_url(self) -> str:
        return f"{self.url}/live/index.m3u8"

    # -- what the channel holds ------------------------------------------------------------

    def clear(self, sequence: int) -> bytes:
        return CLEAR_SEGMENTS[(sequence - self.start) % len(CLEAR_SEGMENTS)]

    def key_index(self, sequence: int) -> int:
        return (sequence - self.start) // self.rotate

    def keys_json(self, count: int = 64) -> dict[str, str]:
        """The first ``count`` keys as ``--keys`` reads them."""
        return {key_id(i): key_value(i).hex() for i in range(count)}

    def end_after(self, count: int) -> int:
        """End the channel ``count`` segments after the last one published; returns the last sequence."""
        with self._lock:
            self._advance()
            self.end_at = self._next + count - 1
            return self.end_at

    def _advance(self) -> None:
        """Publish what is due by now (called under the lock, on each request)."""
        now = time.monotonic()
        while not self._ended and self._next_at is not None and now >= self._next_at:
            if self._next in self.skip_at and (self._served_end or 0) < self._next - 1:
                return  # hold the jump until the client has seen what comes before it
            pause = self.stall_at.pop(self._next, None)
            if pause:
                self._next_at += pause
                continue
            self._publish()
            self._next_at += self.period

    def _publish(self) -> None:
        skip = self.skip_at.pop(self._next, 0)
        if skip:
            self._window.clear()  # a playlist cannot show a hole: the window starts over past it
            self._next += skip
        sequence = self._next
        self._next += 1
        self._window.append(sequence)
        self._served.append(sequence)
        self.published.append(sequence)
        while len(self._window) > self.window_size:
            self._window.popleft()
        while len(self._served) > self.window_size:
            self._cipher_text.pop(self._served.popleft(), None)
        index = self.key_index(sequence)
        self.keys.setdefault(key_id(index), key_value(index).hex())
        if sequence not in self.clear_at:
            cipher = AES.new(key_value(index), AES.MODE_CBC, iv=ZERO_IV)
            self._cipher_text[sequence] = cipher.encrypt(pad(self.clear(sequence), 16))
        self._back = self.back_at.pop(sequence, 0) or self._back
        if sequence == self.end_at:
            self._ended = True

    # -- what a client gets ------------------------------------------------------------------

    def _playlist(self) -> bytes:
        with self._lock:
            if self._next_at is None:
                self._next_at = time.monotonic() + self.period
            self._advance()
            self.playlists_served += 1
            window, ended = list(self._window), self._ended
            if self._back and self._served_end is not None:
                window = [q for q in window if q <= self._served_end - self._back]
                ended, self._back = False, 0
                self.stale_served += 1
            elif window:
                self._served_end = window[-1]
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{self.period:g}",
                 f"#EXT-X-MEDIA-SEQUENCE:{window[0] if window else self._next}"]
        current = None
        for sequence in window:
            if sequence in self.discontinuity_at:
                lines.append("#EXT-X-DISCONTINUITY")
            if sequence in self.clear_at:
                lines.append("#EXT-X-KEY:METHOD=NONE")
                current = None
            elif current != self.key_index(sequence):
                current = self.key_index(sequence)
                when = EPOCH + timedelta(seconds=(sequence - self.start) * self.period)
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{when.isoformat(timespec='milliseconds')}")
                lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{KEY_URI.format(key_id=key_id(current))}",'
                             f"IV=0x{ZERO_IV.hex()}")
            lines += [f"#EXTINF:{self.period:.3f},", f"seg_{sequence}.ts?app=live&stream=HD_1080p"]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        return ("\n".join(lines) + "\n").encode()

    def _segment(self, sequence: int) -> bytes | None:
        with self._lock:
            self._advance()
            self.hits[sequence] += 1
            if sequence not in self._served:
                return None
            return self.clear(sequence) if sequence in self.clear_at else self._cipher_text[sequence]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                body: bytes | None = None
                if path == "/live/index.m3u8":
                    body = origin._playlist()
                elif match := re.fullmatch(r"/live/seg_(\d+)\.ts", path):
                    body = origin._segment(int(match.group(1)))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        return Handler

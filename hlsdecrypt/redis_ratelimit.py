"""The account's request-rate limit kept in Redis, for every process on every machine of a fleet.

The same guarantee as ``ratelimit``, whose reasoning holds unchanged: the limit is what the
*server* sees, and only the client's knowing that the server had a request once its answer came
back is certain. So a request holds the account's one turn while it is in flight, and the next
may be sent one interval after the previous answer came back. A GCRA or leaky bucket spaces the
*sends*; two requests sent an interval apart can still arrive together when the first one's
connection set-up was slow, so it keeps the limit only on a network without delays. The turn
does whatever the network does.

Each step is one Lua script, atomic in Redis, on Redis's own clock (``TIME``): the machines'
clocks differ, and only durations computed by Redis travel to them (how long to wait), so an
offset between clocks changes nothing, and a slow answer only makes a machine later, never
earlier. The state (when the next request may go; until when the request in flight holds the
turn, and whose it is) lives in one hash named by a hash of the account, never the access key
itself; it expires once it says nothing any more. A holder that died or was stopped with
Ctrl-Z keeps the turn until its lease ends, as with the per-machine lock file.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from . import stop
from .ratelimit import MARGIN

if TYPE_CHECKING:
    from .fleet import Connection

#: The longest a waiting process sleeps before asking again whether the turn came free. Half an
#: interval at most: a turn given back is then seen before the interval after it has passed, so
#: polling costs no throughput.
POLL = 0.1
_MICRO = 1_000_000

# Times are integers of microseconds since the epoch (below 2^53, exact in Lua's doubles),
# written with '%.0f' since Lua would write large numbers in exponent form. A state more than an
# hour ahead is corrupt (or Redis's clock jumped back) and counts as free.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'next_send', 'held_until', 'holder')
local next_send, held_until = tonumber(state[1]) or 0, tonumber(state[2]) or 0
if next_send > now + 3600000000 or held_until > now + 3600000000 then
  next_send, held_until = 0, 0
end
"""

#: ARGV: owner, lease, poll (microseconds). Returns 0 when the turn is taken, else how long to wait.
_TAKE = _READ + """
if held_until > now then
  return math.min(tonumber(ARGV[3]), held_until - now)
end
if next_send > now then
  return next_send - now
end
held_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'next_send', string.format('%.0f', next_send),
           'held_until', string.format('%.0f', held_until), 'holder', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil((held_until - now) / 1000) + 1000)
return 0
"""

#: ARGV: owner, interval (microseconds). The turn is freed only by its holder: one whose lease
#: ran out may no longer free a turn that another took since; its answer still pushes the next send.
_GIVE = _READ + """
if state[3] == ARGV[1] then
  held_until = 0
end
next_send = math.max(next_send, now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'next_send', string.format('%.0f', next_send),
           'held_until', string.format('%.0f', held_until))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(next_send, held_until) - now) / 1000) + 1000)
return 0
"""


class RedisRateLimiter:
    """``with limiter.turn(): send the request and read the answer``, for the whole fleet."""

    def __init__(self, connection: "Connection", rate: float, account: str, *, lease: float = 60.0,
                 sleep: Callable[[float], None] = stop.pause):
        """``lease``: how long a request may hold the turn before others take it (longer than any
        request may take); ``account``: the access key and endpoint, hashed before use."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = 1.0 / rate + MARGIN
        self.lease = lease
        self.poll = min(POLL, self.interval / 2)
        digest = hashlib.sha256(b"hlsdecrypt rate\0" + account.encode()).hexdigest()[:32]
        self.key = f"hlsdecrypt:rate:{digest}"
        self._connection = connection
        self._take = connection.client.register_script(_TAKE)
        self._give = connection.client.register_script(_GIVE)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self.rate:g}/s at {self._connection.name})"

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for the account's turn, hold it while the body runs, and pass it on an interval later."""
        owner = secrets.token_hex(8)  # unique across machines, where process ids are not
        while True:
            with self._connection.errors("waiting for the API's turn"):
                wait = self._take(keys=[self.key], args=[owner, _us(self.lease), _us(self.poll)])
            if wait == 0:
                break
            self._sleep(max(int(wait), 1000) / _MICRO)
        try:
            yield
        finally:
            with self._connection.errors("passing on the API's turn"):
                self._give(keys=[self.key], args=[owner, _us(self.interval)])

    def acquire(self) -> None:
        """Take a turn for a request that is sent at once and answered at once (tests, tools)."""
        with self.turn():
            pass


def _us(seconds: float) -> int:
    return round(seconds * _MICRO)

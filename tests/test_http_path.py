"""The HTTP path at the wire's speed: bodies read straight into reused buffers, decrypted in order.

Plain bodies of announced length are read with ``readinto`` into buffers a bounded pool
(``fetch.Bodies``) hands out and takes back; gzip and chunked bodies keep the piecewise path.
Whatever the path, the limits, the deadline and a stop hold, and every output is compared by
sha256 with its clear reference.
"""

from __future__ import annotations

import gzip
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import FIXTURES, MANIFEST, sha256
from servers import HostileServer, LoopbackServer, QuietHandler, StaticServer

from hlsdecrypt import pipeline, stop
from hlsdecrypt.fetch import Abandoned, Bodies, NoRoom
from hlsdecrypt.http import Failure, HttpClient

IMPLICIT = "implicit_iv/index.m3u8"
IMPLICIT_CLEAR = sha256(FIXTURES / "implicit_iv/clear.ts")
BYTERANGE_CLEAR = sha256(FIXTURES / "byterange/clear.ts")


class CountingServer(StaticServer):
    """A StaticServer that counts the connections it accepts (keep-alive serves many requests on one)."""

    def __init__(self, root: Path, **kwargs):
        self.connections = 0
        super().__init__(root, **kwargs)

    def _handler(self):
        server, base = self, super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def setup(self) -> None:
                super().setup()
                server.connections += 1

        return Handler


class OddServer(LoopbackServer):
    """Serves ``root`` in the way the path's first part names:

    ``/extra/…``: the right Content-Length, then more bytes than it announced (what looks like a
    second answer, as if to slip it into the next request's place);
    ``/chunked/…``: chunked, in pieces of 1000 bytes, with no Content-Length;
    ``/gzip/…``: gzip-encoded, though the client asked for identity."""

    JUNK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nJUNK!"

    def __init__(self, root: Path):
        self.root = root
        self.connections = 0
        super().__init__(quiet=True)

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def setup(self) -> None:
                super().setup()
                server.connections += 1

            def do_GET(self) -> None:
                mode, _, rest = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
                file = server.root / rest
                if not file.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = file.read_bytes()
                self.send_response(200)
                if mode == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for at in range(0, len(body), 1000):
                        piece = body[at:at + 1000]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if mode == "gzip":
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body + (server.JUNK if mode == "extra" else b""))

        return Handler


@pytest.fixture
def small_chunks(monkeypatch):
    """Bodies decrypted 4 KiB at a time: the fixtures' segments then span several chunks each."""
    monkeypatch.setattr(pipeline, "FETCHED_CHUNK", 4096)


@pytest.fixture
def stopped_afterwards():
    yield
    stop.reset()


# -- every fixture, every way of fetching ---------------------------------------------------

@pytest.mark.parametrize("jobs", ["1", "3"])
@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: e["clear"].replace("/", ":"))
def test_every_fixture_over_http_decrypts_byte_identical_in_small_chunks(run, served, fixtures, tmp_path,
                                                                          small_chunks, entry, jobs):
    out = tmp_path / "out.bin"
    args = [str(fixtures / a) if a.endswith(".json") else a for a in entry["args"]]
    code, err = run("decrypt", f"{served.url}/{entry['playlist']}", "-o", out, "--jobs", jobs, *args)
    assert code == 0, err
    assert sha256(out) == entry["sha256"]


@pytest.mark.parametrize("ignore_range", [False, True], ids=["206", "200 whole file"])
@pytest.mark.parametrize("jobs", ["1", "4"])
def test_byte_ranges_are_read_into_buffers_from_206_and_cut_from_200(run, fixtures, tmp_path, ignore_range, jobs):
    out = tmp_path / "out.ts"
    with StaticServer(fixtures, ignore_range=ignore_range) as server:
        code, err = run("decrypt", f"{server.url}/byterange/index.m3u8", "-o", out, "--jobs", jobs)
    assert code == 0, err
    assert sha256(out) == BYTERANGE_CLEAR


def test_local_files_on_several_jobs_are_read_into_buffers_too(run, tmp_path, small_chunks):
    out = tmp_path / "out.ts"
    code, err = run("decrypt", FIXTURES / IMPLICIT, "-o", out, "--jobs", "3")
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR


# -- the connection ---------------------------------------------------------------------------

def test_one_job_reads_every_segment_over_one_kept_alive_connection(run, fixtures, tmp_path):
    with CountingServer(fixtures) as server:
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--jobs", "1")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == IMPLICIT_CLEAR
    # eight requests (playlist, key, six segments); the key may come on a connection of its own
    assert sum(server.hits.values()) == 8 and server.connections <= 2


def test_a_body_longer_than_its_content_length_is_cut_there_and_the_rest_never_taken_for_an_answer(
        run, fixtures, tmp_path):
    with OddServer(fixtures) as server:
        code, err = run("decrypt", f"{server.url}/extra/{IMPLICIT}", "-o", tmp_path / "out.ts", "--jobs", "1", "-v")
    # read as the next answer, the 5 bytes after a body would be a segment that cannot decrypt (exit 4)
    # or a key of the wrong length; instead the connection they wait on is not used again
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == IMPLICIT_CLEAR
    assert "retrying" not in err and server.connections > 1


@pytest.mark.parametrize("mode", ["chunked", "gzip"])
def test_chunked_and_gzip_segments_are_read_in_pieces_and_decrypt_byte_identical(run, fixtures, tmp_path, mode):
    with OddServer(fixtures) as server:
        code, err = run("decrypt", f"{server.url}/{mode}/{IMPLICIT}", "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == IMPLICIT_CLEAR


def test_a_truncated_body_read_into_a_buffer_is_retried_and_said(run, fixtures, tmp_path):
    with StaticServer(fixtures, quiet=True) as server:
        server.faults["/implicit_iv/seg2.ts"] = ["truncate", "truncate"]
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--jobs", "1", "-v")
    assert code == 0, err
    assert server.hits["/implicit_iv/seg2.ts"] == 3
    assert "connection dropped mid-answer (6304 of 12608 bytes); retrying" in err
    assert sha256(tmp_path / "out.ts") == IMPLICIT_CLEAR


def test_a_body_that_stays_truncated_ends_the_run_naming_the_segment(run, fixtures, tmp_path):
    with StaticServer(fixtures, quiet=True) as server:
        server.faults["/implicit_iv/seg2.ts"] = ["truncate"] * 3
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--retries", "2")
    assert code == 5
    assert "segment 9 (line 11)" in err and "connection dropped mid-answer (6304 of 12608 bytes)" in err
    assert not (tmp_path / "out.ts").exists()


# -- the client: limits and the deadline with a buffer --------------------------------------

def test_a_body_is_read_into_the_buffer_given_and_nothing_more(served):
    given: list[bytearray] = []

    def into(size: int) -> memoryview:
        given.append(bytearray(size + 100))
        return memoryview(given[-1])[:size]

    answer = HttpClient().get(f"{served.url}/implicit_iv/seg1.ts", limit=1 << 20, into=into)
    assert answer.status == 200 and isinstance(answer.body, memoryview)
    assert answer.body.obj is given[0]  # no copy
    assert bytes(answer.body) == (FIXTURES / "implicit_iv/seg1.ts").read_bytes()
    assert given[0][len(answer.body):] == bytes(100)


def test_a_body_over_the_limit_is_refused_before_a_buffer_is_asked_for(fixtures):
    asked: list[int] = []
    with StaticServer(fixtures, quiet=True) as server, \
            pytest.raises(Failure, match="12608 bytes announced, more than the 1000 bytes allowed"):
        HttpClient().get(f"{server.url}/implicit_iv/seg1.ts", limit=1000, into=lambda n: asked.append(n))  # type: ignore
    assert asked == []


def test_an_error_answer_is_not_read_into_the_buffer(served):
    asked: list[int] = []
    answer = HttpClient().get(f"{served.url}/nowhere.ts", limit=1 << 20, into=lambda n: asked.append(n))  # type: ignore
    assert answer.status == 404 and asked == []


def test_time_spent_waiting_for_a_buffer_does_not_count_against_the_deadline(served):
    def slow(size: int) -> memoryview:
        threading.Event().wait(0.6)  # the caller's own wait: longer than the whole deadline
        return memoryview(bytearray(size))

    answer = HttpClient(deadline=0.3).get(f"{served.url}/implicit_iv/seg1.ts", limit=1 << 20, into=slow)
    assert bytes(answer.body) == (FIXTURES / "implicit_iv/seg1.ts").read_bytes()


# -- the pool of buffers ----------------------------------------------------------------------

def _taken_in_thread(bodies: Bodies, size: int, turn: int) -> tuple[threading.Thread, list]:
    result: list = []

    def take() -> None:
        try:
            result.append(bodies.take(size, turn))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread, result


def test_turns_ahead_wait_for_room_the_awaited_turn_never_does_and_buffers_come_back():
    piece = Bodies.ROUND
    bodies = Bodies(4 * piece)
    ahead = [bodies.take(piece, turn) for turn in (1, 2, 3)]  # room left for turn 0, the one awaited
    waiting, result = _taken_in_thread(bodies, piece, 4)
    waiting.join(0.3)
    assert waiting.is_alive() and result == []  # turn 4 would leave no room for turn 0
    first = bodies.take(piece, 0)  # the awaited turn: at once
    bodies.done(0)  # turn 0 read: its buffer is free, and turn 1 (already fetched) is awaited
    waiting.join(10)
    assert len(result) == 1 and result[0].obj is first.obj  # reused, not a fresh buffer
    assert len({id(v.obj) for v in (*ahead, first)}) == 4 and bodies.allocated == 4 * piece


def test_the_awaited_turn_may_pass_the_budget_and_memory_comes_back_under_it():
    piece = Bodies.ROUND
    bodies = Bodies(2 * piece)
    bodies.take(piece, 1)
    bodies.take(2 * piece, 0)  # awaited, and larger than all the room there is
    assert bodies.allocated == 3 * piece
    bodies.done(0)
    assert bodies.allocated == piece


def test_many_fetches_ahead_hold_the_budget_and_reuse_its_buffers():
    piece, turns = Bodies.ROUND, 60
    bodies = Bodies(4 * piece)
    seen: list = []  # every buffer handed out, kept alive so that ids are not reused
    most = [0]

    def fetch(turn: int) -> memoryview:
        view = bodies.take(piece - turn, turn)
        seen.append(view.obj)
        most[0] = max(most[0], bodies.allocated)
        return view

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(fetch, turn) for turn in range(turns)]
        for turn, future in enumerate(futures):
            assert len(future.result(timeout=10)) == piece - turn
            bodies.done(turn)
    assert most[0] <= 4 * piece and len({id(b) for b in seen}) <= 4


def test_a_turn_tried_again_gives_its_first_buffer_back():
    bodies = Bodies(1 << 20)
    first = bodies.take(1000, 0)
    again = bodies.take(1000, 0)  # a retry of turn 0: the failed try's buffer serves it
    assert again.obj is first.obj


def test_a_stop_or_the_end_of_the_run_frees_a_fetch_waiting_for_a_buffer(stopped_afterwards):
    bodies = Bodies(1)  # no room at all: only the awaited turn gets a buffer
    bodies.take(10, 0)
    waiting, result = _taken_in_thread(bodies, 10, 1)
    stop.request_stop()
    waiting.join(10)
    assert isinstance(result[0], stop.Stopped)
    stop.reset()
    waiting, result = _taken_in_thread(bodies, 10, 2)
    bodies.close()
    waiting.join(10)
    assert isinstance(result[0], Abandoned)


def test_a_fetch_ahead_out_of_patience_lets_its_answer_go_and_waits_for_room_without_it():
    bodies = Bodies(1, patience=0)  # no room ahead at all, and no patience
    bodies.take(10, 0)
    with pytest.raises(NoRoom):
        bodies.take(10, 1)
    waiting = threading.Thread(target=bodies.wait_for_room, args=(1,), daemon=True)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # turn 0 is still being read
    bodies.done(0)  # now turn 1 is awaited: it may ask again, and will get its buffer
    waiting.join(10)
    assert not waiting.is_alive() and len(bodies.take(10, 1)) == 10


def _asks(bodies: Bodies, turn: int, *, within: float = 10.0) -> bool:
    """Whether ``turn`` sends its request ``within`` seconds (else it is left waiting, a daemon).
    Patient by default, so that a busy machine cannot fail the test; ``_waits`` is the short look."""
    asking = threading.Thread(target=bodies.wait_to_ask, args=(turn,), daemon=True)
    asking.start()
    asking.join(within)
    return not asking.is_alive()


def _waits(bodies: Bodies, turn: int) -> bool:
    """Whether ``turn`` is still held outside the window after a moment."""
    return not _asks(bodies, turn, within=0.3)


def test_fetches_ahead_ask_within_a_window_that_the_servers_latency_sizes():
    """The awaited turn and one more ask at first; once bodies show latency far longer than their
    reading (a far server), all the jobs ask at once; at the wire's speed, it is one ahead again."""
    now = [0.0]
    bodies = Bodies(1 << 30, asking=6, clock=lambda: now[0])

    def fetch(turn: int, latency: float, transfer: float) -> None:
        bodies.wait_to_ask(turn)
        now[0] += latency
        bodies.take(1000, turn)  # the answer has come: its body is read into this
        now[0] += transfer
        bodies.fetched(turn)

    assert _asks(bodies, 0) and _asks(bodies, 1) and _waits(bodies, 2)
    fetch(0, latency=0.050, transfer=0.003)  # 50 ms for an answer, 3 ms for its body: 17 bodies' worth
    assert all(_asks(bodies, turn) for turn in (3, 4, 5)) and _waits(bodies, 6)
    for turn in range(1, 9):  # at the wire's speed now: answers in 0.2 ms
        bodies.done(turn - 1)
        fetch(turn, latency=0.0002, transfer=0.003)
    bodies.done(8)
    assert _asks(bodies, 10) and _waits(bodies, 11)
    bodies.wait_to_ask(9)
    bodies.fetched(9)  # read in pieces (chunked, gzip), never into a buffer: its answer cannot be timed
    assert _asks(bodies, 14) and _waits(bodies, 15)  # so as wide as the jobs, as before


def test_a_slow_reader_has_fetches_ahead_ask_again_and_every_part_comes_in_order(run, fixtures, tmp_path,
                                                                                   monkeypatch, small_chunks):
    monkeypatch.setattr(pipeline, "FETCHED_AHEAD", 1)
    monkeypatch.setattr(pipeline, "FETCH_PATIENCE", 0)  # every fetch ahead lets its answer go at once
    with StaticServer(fixtures, quiet=True) as server:  # it sees answers cut short
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--jobs", "6")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == IMPLICIT_CLEAR


def test_with_no_room_ahead_every_part_still_comes_in_order(run, served, tmp_path, monkeypatch, small_chunks):
    monkeypatch.setattr(pipeline, "FETCHED_AHEAD", 1)  # each fetch waits for its turn to be awaited
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--jobs", "6")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == IMPLICIT_CLEAR


def test_a_failed_segment_ends_the_run_while_later_fetches_wait_for_buffers(run, fixtures, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "FETCHED_AHEAD", 1)
    outcome: list = []
    with StaticServer(fixtures, quiet=True) as server:
        server.faults["/implicit_iv/seg2.ts"] = [404]
        worker = threading.Thread(target=lambda: outcome.append(
            run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--jobs", "6")), daemon=True)
        worker.start()
        worker.join(60)
    assert not worker.is_alive(), "the run hung on fetches waiting for buffers"
    code, err = outcome[0]
    assert code == 5 and "segment 9 (line 11)" in err and "HTTP 404" in err


def test_a_failed_segment_cuts_the_fetches_ahead_still_reading_a_slow_body(run, tmp_path):
    """After a segment fails, a fetch ahead that is still reading a body is cut: the run ends now,
    not when the server has trickled the rest (here, four minutes; the deadline is five). The first
    segment's server never answers, so it fails (a one-second read timeout) while the second's
    body is being read."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n/silent/seg0.ts\n"
                                     "#EXTINF:2,\n/trickle-body/seg1.ts?bytes=1000\n#EXT-X-ENDLIST\n")
    outcome: list = []
    with HostileServer(root) as server:
        worker = threading.Thread(target=lambda: outcome.append(
            run("decrypt", f"{server.url}/index.m3u8", "-o", tmp_path / "out.ts", "--jobs", "2", "--timeout", "1",
                "--retries", "0")), daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the run waited for a body no one would read"
        assert server.requests["trickle-body"] == 1  # cut, and not asked for again
    code, err = outcome[0]
    assert code == 5 and "seg0.ts" in err and "timed out" in err, err
    assert not (tmp_path / "out.ts").exists()

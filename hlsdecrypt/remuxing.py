"""Files people can play: clear TS (or fMP4) files, the video and its renditions, stream-copied into one mp4 or mkv.

The byte-exact decrypt stays the reference output; this is a second step after it, and never
re-encodes. It runs through PyAV (``pip install 'hlsdecrypt[remux]'``, FFmpeg's libraries in a
wheel) or, without it, an ``ffmpeg`` found on ``PATH``.

Timing is kept as HLS means it: renditions share one timeline (RFC 8216 §3, "matching
timestamps"), so the inputs are shifted together until the earliest packet is at zero, which
keeps an audio rendition that starts later than the video just as late. Both muxers turn ADTS
AAC into raw AAC with an AudioSpecificConfig and Annex B H.264 into length-prefixed NAL units
by themselves (libavformat inserts ``aac_adtstoasc`` for mp4 and mkv), so no filter is named
here; the tests check the result.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

from . import stop
from .errors import InputError, OutputError, UsageError
from .output import Output

#: --remux names, and the libavformat muxer for each
FORMATS = {"mp4": "mp4", "mkv": "matroska"}
TOOLS = ("auto", "pyav", "ffmpeg")
#: the stream kinds both containers carry by stream copy; data streams (timed ID3, SCTE-35) are left out
_KINDS = ("video", "audio", "subtitle")
#: a jump of a timestamp by more than this, either way, is a discontinuity, not a gap (ffmpeg's -dts_delta_threshold)
_JUMP = 10.0
#: a step back by more than this within one stream is a discontinuity too (as ffmpeg judges MPEG-TS input)
_STEP_BACK = 0.1

_NEEDS_PYAV = "pip install 'hlsdecrypt[remux]'"
_NEEDS_FFMPEG = "put ffmpeg on PATH (apt-get install ffmpeg, brew install ffmpeg, or ffmpeg.org)"


@dataclass(frozen=True)
class RemuxResult:
    output: Path
    format: str  # "mp4" or "mkv"
    tool: str  # "pyav" or "ffmpeg"
    streams: int  # streams written
    size: int  # bytes
    notes: tuple[str, ...] = ()  # what a user may want to know: streams left out, timestamps mended


def remux(inputs: Sequence[str | Path], output: str | Path, fmt: str, *, tool: str = "auto",
          force: bool = False) -> RemuxResult:
    """Stream-copy every video, audio and subtitle stream of ``inputs`` into ``output``.

    ``output`` appears only when complete, and replaces an existing file only with ``force``
    (OutputError otherwise, as for the decrypted output). ``tool`` picks PyAV or ffmpeg;
    ``auto`` takes PyAV when it is installed. UsageError (exit 2) when the tool asked for is
    missing, or the container cannot hold a stream; InputError (exit 3) for an input that is
    not media.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--remux {fmt}: choose one of {', '.join(FORMATS)}")
    if tool not in TOOLS:
        raise UsageError(f"remux tool {tool!r}: choose one of {', '.join(TOOLS)}")
    if not inputs:
        raise UsageError("nothing to remux: no input files")
    sources = [Path(p) for p in inputs]
    for source in sources:
        if not source.is_file():
            raise InputError(f"{source}: no such file to remux")
    target = str(output)
    if target == "-":
        raise UsageError(f"--remux {fmt} writes a file, not stdout: the container is finished by seeking back")
    run = _choose(tool, fmt)
    out = Output(target, "", force=force, inputs=[str(s) for s in sources])
    if out.in_place:
        raise OutputError(f"{target}: not a regular file; --remux writes a file and renames it into place")
    with out:
        # Output made and locked the temporary file beside the target; the tool writes it by name,
        # and Output gives it the target's name at the end, or removes it on failure
        streams, notes = run(sources, out._temp, fmt)
    return RemuxResult(Path(target), fmt, "pyav" if run is _with_pyav else "ffmpeg", streams,
                       os.path.getsize(target), tuple(notes))


def _choose(tool: str, fmt: str):
    if tool in ("auto", "pyav"):
        try:
            import av  # noqa: F401  # only whether it is there
        except ImportError:
            if tool == "pyav":
                raise UsageError(f"remuxing with PyAV needs it installed: {_NEEDS_PYAV}") from None
        else:
            return _with_pyav
    if shutil.which("ffmpeg"):
        return _with_ffmpeg
    if tool == "ffmpeg":
        raise UsageError(f"remuxing with ffmpeg needs it: {_NEEDS_FFMPEG}")
    raise UsageError(f"--remux {fmt} needs PyAV or ffmpeg, and neither is here: {_NEEDS_PYAV}, or {_NEEDS_FFMPEG}")


# --- PyAV ---------------------------------------------------------------------------------------

def _with_pyav(sources: list[Path], temp: str, fmt: str) -> tuple[int, list[str]]:
    import av
    from av.error import FFmpegError

    notes: list[str] = []
    containers = []
    try:
        for source in sources:
            try:
                containers.append(av.open(str(source)))
            except FFmpegError as exc:
                raise InputError(f"{source}: not media that can be remuxed ({_reason(exc)})") from None
        options = {"movflags": "+faststart"} if fmt == "mp4" else {}  # playable while it downloads
        with av.open(temp, "w", format=FORMATS[fmt], options=options) as muxer:
            mapping, timelines = {}, []
            supported = getattr(muxer, "supported_codecs", None)  # PyAV 13 and later
            for source, container in zip(sources, containers):
                timeline = _Timeline(source)
                timelines.append(timeline)
                for stream in container.streams:
                    if stream.type not in _KINDS:
                        notes.append(f"{source}: its {stream.type} stream #{stream.index} is left out "
                                      f"({fmt} cannot carry it)")
                        continue
                    codec = stream.codec_context.name
                    if supported is not None and codec not in supported:
                        raise UsageError(f"{source}: its {codec} {stream.type} stream cannot go into {fmt} "
                                         f"without re-encoding{'; mkv can hold it' if fmt == 'mp4' else ''}")
                    mapping[stream] = _copy_of(muxer, stream)
                    timeline.streams[stream] = _Track()
            if not mapping:
                raise InputError(f"{', '.join(map(str, sources))}: no video, audio or subtitle stream to remux")
            starts = [c.start_time for c in containers if c.start_time is not None]
            origin = Fraction(min(starts), av.time_base) if starts else Fraction(0)
            for timeline in timelines:
                timeline.offset = -origin
            try:
                for packet, timeline in _in_time_order(containers, timelines, mapping):
                    stop.check()
                    timeline.place(packet)
                    packet.stream = mapping[packet.stream]
                    muxer.mux(packet)
            except FFmpegError as exc:
                raise _muxing_error(exc, fmt) from None
            for timeline in timelines:
                notes += timeline.notes()
    except FFmpegError as exc:  # writing the header or the trailer
        raise _muxing_error(exc, fmt) from None
    finally:
        for container in containers:
            container.close()
    return len(mapping), notes


def _copy_of(muxer, stream):
    if hasattr(muxer, "add_stream_from_template"):
        return muxer.add_stream_from_template(stream)
    return muxer.add_stream(template=stream)  # PyAV before 14


def _in_time_order(containers, timelines, mapping) -> Iterator:
    """The packets of all inputs, merged by decoding time, so the muxer can interleave them
    without holding one input's packets while it waits for another's."""
    readers = [_packets(c, mapping) for c in containers]
    heads: list = [next(r, None) for r in readers]
    while True:
        best = None
        for i, head in enumerate(heads):
            if head is not None and (best is None or timelines[i].when(head) < timelines[best].when(heads[best])):
                best = i
        if best is None:
            return
        yield heads[best], timelines[best]
        heads[best] = next(readers[best], None)


def _packets(container, mapping) -> Iterator:
    for packet in container.demux():
        if packet.stream in mapping and packet.size and packet.dts is not None:  # not the demuxer's flush packets
            yield packet


class _Track:
    """What one stream of an input has placed so far."""

    __slots__ = ("last", "last_dts", "next")

    def __init__(self) -> None:
        self.last_dts: int | None = None  # in the stream's time base, after the shift
        self.last: float | None = None  # the same, in seconds
        self.next: float | None = None  # when the packet after it is due, if its duration is known


class _Timeline:
    """The time shift of one input: common to all inputs at first, mended where the input's own
    timestamps jump (an encoder restart, a spliced recording), as ffmpeg mends MPEG-TS input."""

    def __init__(self, source: Path):
        self.source = source
        self.offset = Fraction(0)  # seconds added to every timestamp of this input
        self.last: float | None = None  # decoding time of the input's last packet, any stream
        self.streams: dict = {}
        self.jumps: list[str] = []
        self.nudged = 0

    def when(self, packet) -> float:
        return float(packet.dts * packet.time_base + self.offset)

    def place(self, packet) -> None:
        """Shift the packet's timestamps onto the common timeline."""
        track = self.streams[packet.stream]
        at = self.when(packet)
        expected = track.next if track.next is not None else self.last
        if expected is not None:
            delta = at - expected
            if abs(delta) > _JUMP or (track.last is not None and at < track.last - _STEP_BACK):
                self.offset -= Fraction(delta)
                self.jumps.append(f"{delta:+.3f} s at {expected:.3f} s")
        base = packet.time_base
        shift = round(self.offset / base)
        dts = packet.dts + shift
        if track.last_dts is not None and dts <= track.last_dts:  # a step back too small to call a jump
            dts = track.last_dts + 1
            self.nudged += 1
        packet.pts = None if packet.pts is None else max(packet.pts + shift, dts)
        packet.dts = dts
        track.last_dts, track.last = dts, float(dts * base)
        track.next = track.last + float(packet.duration * base) if packet.duration else None
        self.last = track.last if self.last is None else max(self.last, track.last)

    def notes(self) -> list[str]:
        notes = []
        if self.jumps:
            more = f" and {len(self.jumps) - 3} more" if len(self.jumps) > 3 else ""
            notes.append(f"{self.source}: timestamps jump ({', '.join(self.jumps[:3])}{more}); each continued "
                         "from where the stream was")
        if self.nudged:
            notes.append(f"{self.source}: {self.nudged} timestamps moved forward a tick to keep them increasing")
        return notes


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _muxing_error(exc: Exception, fmt: str) -> Exception:
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return OutputError(f"remuxing to {fmt}: no space left on the disk")
    return InputError(f"remuxing to {fmt} failed: {_reason(exc)}")


# --- ffmpeg -------------------------------------------------------------------------------------

def _with_ffmpeg(sources: list[Path], temp: str, fmt: str) -> tuple[int, list[str]]:
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    starts, streams, notes = _probe(ffmpeg, sources, fmt)
    known = [s for s in starts if s is not None]
    command = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    for source, start in zip(sources, starts):
        # ffmpeg starts each input at zero; shifting each back by its own lead keeps renditions in step
        if start is not None and start > min(known):
            command += ["-itsoffset", f"{start - min(known):.6f}"]
        command += ["-i", str(source)]
    for i in range(len(sources)):
        command += ["-map", f"{i}", "-map", f"-{i}:d"]
    command += ["-c", "copy"]
    if fmt == "mp4":
        command += ["-movflags", "+faststart"]
    command += ["-f", FORMATS[fmt], temp]
    done = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace")
    if done.returncode != 0:
        said = _said(done.stderr)
        first = said[0] if said else f"exit status {done.returncode}"
        if "not currently supported in container" in first:
            raise UsageError(f"{fmt} cannot hold a stream without re-encoding (ffmpeg: {first})")
        if any("No space left" in line for line in said):
            raise OutputError(f"remuxing to {fmt}: no space left on the disk")
        raise InputError(f"ffmpeg could not remux to {fmt}: {first}")
    return streams, notes


def _said(stderr: str) -> list[str]:
    """ffmpeg's error lines, without the ``[mp4 @ 0x…]`` prefix that names its internals."""
    return [re.sub(r"^\[[^]]* @ 0x[0-9a-f]+\] ", "", line.strip()) for line in stderr.splitlines() if line.strip()]


_INPUT = re.compile(r"^Input #(\d+),")
_START = re.compile(r"start: (-?\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #(\d+):(\d+)\S*: (\w+)")


def _probe(ffmpeg: str, sources: list[Path], fmt: str) -> tuple[list[float | None], int, list[str]]:
    """Each input's start time, the number of streams that will be copied and notes on those left
    out, from ffmpeg's own description of its inputs (``ffmpeg -i``, which then stops for want of
    an output)."""
    command = [ffmpeg, "-hide_banner", "-nostdin"]
    for source in sources:
        command += ["-i", str(source)]
    described = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               errors="replace").stderr
    starts: list[float | None] = [None] * len(sources)
    streams, current, notes = 0, None, []
    for line in described.splitlines():
        if match := _INPUT.match(line):
            current = int(match.group(1))
        elif current is not None and starts[current] is None and (match := _START.search(line)):
            starts[current] = float(match.group(1))
        elif match := _STREAM.match(line):
            kind = match.group(3).lower()
            if kind in _KINDS:
                streams += 1
            else:
                notes.append(f"{sources[int(match.group(1))]}: its {kind} stream #{match.group(2)} is left out "
                             f"({fmt} cannot carry it)")
    if described.count("Input #") != len(sources):  # ffmpeg stops at the first input it cannot read
        said = _said(described)
        last = said[-1] if said else "ffmpeg could not read it"
        for source in sources:
            if last.startswith(f"{source}: "):
                raise InputError(f"{source}: not media that can be remuxed ({last[len(str(source)) + 2:]})")
        raise InputError(f"not media that can be remuxed: {last}")
    return starts, streams, notes

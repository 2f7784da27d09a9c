"""--remux: the video and its audio rendition stream-copied into one mp4 or mkv, packet for packet.

A remux cannot be compared byte for byte with its inputs, so its packets are: demuxed with PyAV
from the clear TS references and from the remuxed file, stream by stream, the same number of
packets with the same payloads in the same order. Payloads are compared after normalising what
the container changes and nothing else: H.264 is Annex B (start codes) in TS and length-prefixed
NAL units (AVCC) in mp4 and mkv, so both are cut into their NAL units; AAC in TS carries an ADTS
header on each frame, which mp4 and mkv drop for an AudioSpecificConfig, so the header is cut off
the TS side only, and the remuxed side is checked to have none. Each case runs with PyAV and, when
it is on PATH, with the ffmpeg fallback.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import FIXTURES

from hlsdecrypt.errors import InputError, OutputError, UsageError
from hlsdecrypt.remuxing import _copy_of, remux  # _copy_of: a stream copy on any PyAV from 12 on

try:
    import av
except ImportError:
    av = None

VIDEO = FIXTURES / "renditions/clear_video.ts"
AUDIO = FIXTURES / "renditions/clear_audio.ts"

needs_av = pytest.mark.skipif(av is None, reason="PyAV is not installed: pip install -e '.[test]' "
                                                 "(or pip install 'hlsdecrypt[remux]')")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg is not on PATH, so its fallback is untested here: "
                                         "apt-get install ffmpeg (or brew install ffmpeg) to test it")
TOOLS = [pytest.param("pyav", marks=needs_av), pytest.param("ffmpeg", marks=[needs_av, needs_ffmpeg])]
FORMATS = ["mp4", "mkv"]


def _nal_units(data: bytes, extradata: bytes | None) -> list[bytes]:
    if extradata and extradata[0] == 1:  # avcC: NAL units behind big-endian lengths
        size, units, i = (extradata[4] & 3) + 1, [], 0
        while i < len(data):
            n = int.from_bytes(data[i:i + size], "big")
            units.append(data[i + size:i + size + n])
            i += size + n
        return units
    units = []  # Annex B: NAL units between 00 00 01 start codes; a 4-byte code's extra zero trails the unit before
    for chunk in data.split(b"\x00\x00\x01")[1:]:
        units.append(chunk.rstrip(b"\x00"))
    return units


def _codec(stream) -> str | None:
    return stream.codec_context.name if stream.codec_context else None  # data streams have no codec context


def _payload(stream, packet) -> bytes:
    data = bytes(packet)
    extradata = stream.codec_context.extradata if stream.codec_context else None
    if _codec(stream) == "h264":
        return b"".join(len(u).to_bytes(4, "big") + u for u in _nal_units(data, extradata))
    if _codec(stream) == "aac" and not extradata:  # ADTS: each frame behind its own header
        assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0, "an AAC frame without ADTS header or config"
        return data[7 if data[1] & 1 else 9:]
    return data


def _packets(path: Path) -> list[tuple[str, str, list[str]]]:
    """Per stream: its kind, codec, and the sha256 of each packet's normalised payload, in order."""
    with av.open(str(path)) as container:
        streams = {s.index: (s.type, _codec(s), []) for s in container.streams}
        for packet in container.demux():
            if packet.size and packet.dts is not None:
                streams[packet.stream.index][2].append(hashlib.sha256(_payload(packet.stream, packet)).hexdigest())
    return list(streams.values())


def _starts(path: Path) -> list[Fraction]:
    """The first presentation time of each stream, in seconds."""
    with av.open(str(path)) as container:
        first: dict[int, Fraction] = {}
        for packet in container.demux():
            if packet.pts is not None and packet.size:
                first.setdefault(packet.stream.index, packet.pts * packet.time_base)
        return [first[s.index] for s in container.streams]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tool", TOOLS)
def test_remux_keeps_every_packet_of_the_video_and_its_audio_rendition(tool, fmt, tmp_path):
    out = tmp_path / f"film.{fmt}"
    result = remux([VIDEO, AUDIO], out, fmt, tool=tool)
    assert (result.tool, result.format, result.streams, result.size) == (tool, fmt, 2, out.stat().st_size)
    expected = _packets(VIDEO) + _packets(AUDIO)
    assert [(kind, codec, len(hashes)) for kind, codec, hashes in expected] == [
        ("video", "h264", 30), ("audio", "aac", 66)]
    assert _packets(out) == expected
    with av.open(str(out)) as container:
        video, audio = container.streams
        assert video.codec_context.extradata[0] == 1  # avcC: length-prefixed NAL units, not start codes
        assert audio.codec_context.extradata  # an AudioSpecificConfig, since the ADTS headers are gone
        assert container.format.name.startswith({"mp4": "mov", "mkv": "matroska"}[fmt])


@pytest.mark.parametrize("tool", TOOLS)
def test_a_rendition_that_starts_later_stays_in_step(tool, tmp_path):
    late = tmp_path / "late_audio.ts"
    with av.open(str(AUDIO)) as source, av.open(str(late), "w", format="mpegts") as sink:
        copy = _copy_of(sink, source.streams.audio[0])
        for packet in source.demux():
            if packet.size and packet.dts is not None:
                packet.pts += 45000  # half a second, in the 90 kHz clock of MPEG-TS
                packet.dts += 45000
                packet.stream = copy
                sink.mux(packet)
    lead = _starts(late)[0] - _starts(VIDEO)[0]
    assert abs(lead - Fraction(1, 2)) < Fraction(1, 1000)
    out = tmp_path / "film.mp4"
    remux([VIDEO, late], out, "mp4", tool=tool)
    video_start, audio_start = _starts(out)
    assert video_start == 0
    assert abs(audio_start - video_start - lead) < Fraction(1, 1000)


@pytest.mark.parametrize("tool", TOOLS)
def test_timestamps_that_jump_back_are_continued(tool, tmp_path):
    """Two recordings joined end to end: the second starts at the first one's timestamps again."""
    joined = []
    for clear in (VIDEO, AUDIO):
        path = tmp_path / f"twice_{clear.name}"
        path.write_bytes(clear.read_bytes() * 2)
        joined.append(path)
    out = tmp_path / "film.mkv"
    result = remux(joined, out, "mkv", tool=tool)
    assert _packets(out) == _packets(joined[0]) + _packets(joined[1])
    with av.open(str(out)) as container:
        times: dict[int, list[Fraction]] = {}
        for packet in container.demux():
            if packet.size and packet.dts is not None:
                times.setdefault(packet.stream.index, []).append(packet.dts * packet.time_base)
    for stream_times in times.values():
        assert all(a < b for a, b in zip(stream_times, stream_times[1:]))
    assert abs(times[0][-1] - Fraction(59, 10)) < Fraction(1, 100)  # 60 frames at 10 fps, none squeezed
    if tool == "pyav":
        assert any("timestamps jump (-3.000 s" in note for note in result.notes)


@pytest.mark.parametrize("tool", TOOLS)
def test_fragmented_mp4_input_is_copied_too(tool, tmp_path):
    clear = FIXTURES / "fmp4/clear.mp4"
    out = tmp_path / "film.mkv"
    remux([clear], out, "mkv", tool=tool)
    assert _packets(out) == _packets(clear)
    assert sum(len(hashes) for _, _, hashes in _packets(out)) > 0


@pytest.mark.parametrize("tool", TOOLS)
def test_subtitles_go_into_mkv_and_mp4_says_it_cannot_hold_them(tool, tmp_path):
    subtitles = tmp_path / "english.vtt"
    subtitles.write_text("WEBVTT\n\n00:00:00.500 --> 00:00:01.500\nhello\n\n00:00:01.600 --> 00:00:02.500\nworld\n")
    out = tmp_path / "film.mkv"
    assert remux([VIDEO, AUDIO, subtitles], out, "mkv", tool=tool).streams == 3
    kind, codec, hashes = _packets(out)[2]
    assert (kind, codec, hashes) == ("subtitle", "webvtt", [hashlib.sha256(b"hello").hexdigest(),
                                                            hashlib.sha256(b"world").hexdigest()])
    with pytest.raises(UsageError, match="webvtt") as refused:
        remux([VIDEO, AUDIO, subtitles], tmp_path / "film.mp4", "mp4", tool=tool)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["english.vtt", "film.mkv"]


@pytest.mark.parametrize("tool", TOOLS)
def test_timed_metadata_is_left_out_with_a_note(tool, tmp_path):
    """ID3 tags in their own data stream, as services put in HLS: neither container carries them."""
    if not hasattr(av.container.OutputContainer, "add_data_stream"):
        pytest.skip(f"PyAV {av.__version__} cannot write the data stream this test needs: PyAV 14 or later can "
                    "(pip install -U av)")
    tagged = tmp_path / "tagged.ts"
    with av.open(str(VIDEO)) as source, av.open(str(tagged), "w", format="mpegts") as sink:
        video, tags = _copy_of(sink, source.streams.video[0]), sink.add_data_stream("timed_id3")
        for n, packet in enumerate(p for p in source.demux() if p.size):
            packet.stream = video
            sink.mux(packet)
            if n % 10 == 0:
                tag = av.Packet(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10))
                tag.stream, tag.pts, tag.dts, tag.time_base = tags, packet.dts, packet.dts, packet.time_base
                sink.mux(tag)
    assert [kind for kind, _, _ in _packets(tagged)] == ["video", "data"]
    out = tmp_path / "film.mp4"
    result = remux([tagged, AUDIO], out, "mp4", tool=tool)
    assert result.streams == 2
    assert result.notes == (f"{tagged}: its data stream #1 is left out (mp4 cannot carry it)",)
    assert _packets(out) == _packets(VIDEO) + _packets(AUDIO)


@pytest.mark.parametrize("tool", TOOLS)
def test_an_existing_output_is_kept_unless_forced(tool, tmp_path):
    out = tmp_path / "film.mp4"
    out.write_bytes(b"mine")
    with pytest.raises(OutputError, match="exists") as refused:
        remux([VIDEO, AUDIO], out, "mp4", tool=tool)
    assert refused.value.exit_code == 7
    assert out.read_bytes() == b"mine"
    remux([VIDEO, AUDIO], out, "mp4", tool=tool, force=True)
    assert _packets(out) == _packets(VIDEO) + _packets(AUDIO)
    assert [p.name for p in tmp_path.iterdir()] == ["film.mp4"]  # no temporary file left beside it


@pytest.mark.parametrize("tool", TOOLS)
def test_an_input_that_is_not_media_is_refused_and_nothing_is_left(tool, tmp_path):
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"this is not media, only words\n" * 150)
    with pytest.raises(InputError) as refused:
        remux([VIDEO, junk], tmp_path / "film.mp4", "mp4", tool=tool)
    assert str(refused.value).startswith(f"{junk}: not media that can be remuxed (")
    assert refused.value.exit_code == 3 and "\n" not in str(refused.value)
    assert [p.name for p in tmp_path.iterdir()] == ["junk.ts"]


def test_the_output_cannot_be_an_input(tmp_path):
    video = tmp_path / "film.ts"
    shutil.copyfile(VIDEO, video)
    with pytest.raises(OutputError, match="is an input"):
        remux([video], video, "mkv", force=True)
    assert video.read_bytes() == VIDEO.read_bytes()


def test_unknown_format_and_stdout_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="choose one of mp4, mkv"):
        remux([VIDEO], tmp_path / "film.avi", "avi")
    with pytest.raises(UsageError, match="not stdout"):
        remux([VIDEO], "-", "mp4")


def test_without_ffmpeg_on_path_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UsageError) as refused:
        remux([VIDEO, AUDIO], tmp_path / "film.mp4", "mp4", tool="ffmpeg")
    message = str(refused.value)
    assert message == ("remuxing with ffmpeg needs it: put ffmpeg on PATH "
                       "(apt-get install ffmpeg, brew install ffmpeg, or ffmpeg.org)")
    assert refused.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_without_pyav_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets when PyAV is not installed
    with pytest.raises(UsageError) as refused:
        remux([VIDEO, AUDIO], tmp_path / "film.mp4", "mp4", tool="pyav")
    assert str(refused.value) == "remuxing with PyAV needs it installed: pip install 'hlsdecrypt[remux]'"
    assert refused.value.exit_code == 2


def test_with_neither_the_error_names_both_ways_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UsageError) as refused:
        remux([VIDEO, AUDIO], tmp_path / "film.mkv", "mkv")
    message = str(refused.value)
    assert message.startswith("--remux mkv needs PyAV or ffmpeg, and neither is here: ")
    assert "pip install 'hlsdecrypt[remux]'" in message and "apt-get install ffmpeg" in message
    assert "\n" not in message and refused.value.exit_code == 2


@needs_av
def test_auto_takes_pyav_when_installed(tmp_path):
    assert remux([VIDEO, AUDIO], tmp_path / "film.mp4", "mp4").tool == "pyav"


@needs_av
@needs_ffmpeg
def test_auto_falls_back_to_ffmpeg_without_pyav(monkeypatch, tmp_path):
    out = tmp_path / "film.mp4"
    monkeypatch.setitem(sys.modules, "av", None)
    result = remux([VIDEO, AUDIO], out, "mp4")
    monkeypatch.undo()
    assert result.tool == "ffmpeg"
    assert _packets(out) == _packets(VIDEO) + _packets(AUDIO)

"""What clear media looks like: MPEG-TS packets, ISO BMFF (fMP4) boxes, packed audio.

A wrong key almost always breaks the PKCS#7 padding, but a wrong IV only garbles the first 16
bytes of a segment, which padding cannot see and players forgive. These checks look exactly
there: the TS sync byte and the CRC of a PSI table in the first packet (ffmpeg and most
packagers start each segment with one), or the first box header of an fMP4 segment.
"""

from __future__ import annotations

import struct

from .crypto import Buffer

TS_PACKET = 188
TS_SYNC = 0x47


def crc32_mpeg2(data: Buffer) -> int:
    """CRC-32/MPEG-2, as PSI sections carry it; over a whole section, including its CRC, it is 0."""
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def start_problem(clear: Buffer) -> str | None:
    """Why decrypted bytes do not begin like a media segment, or None when they do."""
    head = bytes(clear[:TS_PACKET + 1])
    if not head:
        return None
    if head[0] == TS_SYNC:
        return _ts_problem(head)
    if _is_box(head) or head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xF0 == 0xF0):
        return None
    return "clear bytes are neither MPEG-TS, fMP4 nor packed audio (wrong key or IV?)"


def _ts_problem(head: bytes) -> str | None:
    if len(head) > TS_PACKET and head[TS_PACKET] != TS_SYNC:
        return "no MPEG-TS sync byte at offset 188 (wrong key?)"
    if len(head) < TS_PACKET:  # less than a packet: nothing more to look at
        return None
    payload_unit_start = head[1] & 0x40
    payload_only = (head[3] >> 4) & 0x3 == 1
    if not (payload_unit_start and payload_only) or head[4] != 0:
        return None
    if not head[6] & 0x80:  # no section syntax, so no CRC to check
        return None
    end = 8 + (((head[6] & 0x0F) << 8) | head[7])
    if end <= TS_PACKET and crc32_mpeg2(head[5:end]) != 0:
        return "the first TS packet's table fails its CRC (wrong IV?)"
    return None


def _is_box(head: bytes) -> bool:
    """An ISO BMFF box header: a plausible size, a printable type, and a sane first field."""
    if len(head) < 16:
        return False
    size, kind = struct.unpack(">I4s", head[:8])
    if not (size == 1 or size >= 8) or not all(0x20 < c < 0x7F for c in kind):
        return False
    if kind in (b"ftyp", b"styp"):
        return all(0x20 <= c < 0x7F for c in head[8:12])  # major brand
    if kind == b"moof":
        return head[12:16] == b"mfhd"
    return True


def ts_sync_ratio(data: Buffer) -> float:
    """Share of 188-byte strides that start with the sync byte: ~1.0 for clear TS, ~1/256 for ciphertext."""
    view = memoryview(data)
    count = len(view) // TS_PACKET
    if count == 0:
        return 0.0
    return bytes(view[0:count * TS_PACKET:TS_PACKET]).count(TS_SYNC) / count


def structure_problem(clear: Buffer) -> str | None:
    """Why clear bytes are not whole media — MPEG-TS packets throughout, or a chain of ISO BMFF
    boxes that ends exactly at the end — or None. Packed audio (ADTS, ID3) is only start-checked."""
    view = memoryview(clear)
    if not len(view):
        return "empty"
    if view[0] == TS_SYNC:
        count = len(view) // TS_PACKET
        syncs = bytes(view[0:count * TS_PACKET:TS_PACKET])
        lost = len(syncs) - len(syncs.lstrip(bytes([TS_SYNC])))
        if lost < count:
            return f"MPEG-TS sync lost at packet {lost} (byte {lost * TS_PACKET})"
        if len(view) % TS_PACKET:
            return f"{len(view)} bytes are not whole 188-byte TS packets"
        return start_problem(view)
    if _is_box(bytes(view[:16])):
        return _box_chain_problem(view)
    return start_problem(view)


def _box_chain_problem(view: memoryview) -> str | None:
    pos = 0
    while pos < len(view):
        if len(view) - pos < 8:
            return f"{len(view) - pos} stray bytes after the last box"
        size, kind = struct.unpack(">I4s", view[pos:pos + 8])
        if size == 1 and len(view) - pos >= 16:
            size = struct.unpack(">Q", view[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(view) - pos
        if size < 8 or pos + size > len(view) or not all(0x20 < c < 0x7F for c in kind):
            return f"broken box at byte {pos}"
        pos += size
    return None


def looks_clear(data: Buffer) -> bool:
    """Whether bytes labelled as ciphertext are in fact clear MPEG-TS or fMP4."""
    view = memoryview(data)
    if len(view) >= 2 * TS_PACKET and ts_sync_ratio(view) > 0.5:
        return True
    return _is_box(bytes(view[:16])) and _box_chain_problem(view) is None

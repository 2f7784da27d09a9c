"""The small pieces: CBC against pycryptodome's own mode, IVs, KeyIDs, secrets in reprs."""

from __future__ import annotations

import os
import random

import pytest
from Crypto.Cipher import AES

from hlsdecrypt.crypto import SMALL, CbcDecryptor, DataKey, decrypt_cbc, encrypt_cbc
from hlsdecrypt.errors import DecryptError
from hlsdecrypt.media import crc32_mpeg2, ts_sync_ratio
from hlsdecrypt.playlist import key_id_of, parse
from hlsdecrypt.retry import Backoff


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 188, 4096, 188 * 1000 + 3])
def test_fast_cbc_matches_pycryptodome_cbc(size):
    rng = random.Random(size)
    key, iv, data = (rng.randbytes(n) for n in (16, 16, size))
    cipher_text = AES.new(key, AES.MODE_CBC, iv=iv).encrypt(data + bytes([16 - size % 16]) * (16 - size % 16))
    assert bytes(decrypt_cbc(cipher_text, DataKey(key), iv)) == data
    assert encrypt_cbc(data, DataKey(key), iv) == cipher_text


@pytest.mark.parametrize("chunk", [16, SMALL - 16, SMALL, SMALL + 16, 4 * SMALL])
def test_cbc_in_chunks_on_either_side_of_the_small_path(chunk):
    """Chunks up to SMALL bytes are XORed as integers, larger ones by the library: each must carry
    the last ciphertext block into the next, whichever path the next takes."""
    rng = random.Random(chunk)
    key, iv, data = rng.randbytes(16), rng.randbytes(16), rng.randbytes(5 * SMALL + 7)
    cipher_text = encrypt_cbc(data, DataKey(key), iv)
    decryptor, clear = CbcDecryptor(DataKey(key), iv, len(cipher_text)), bytearray()
    sizes = [chunk, SMALL + 32, 48] * len(cipher_text)  # both paths, in turn
    at = 0
    for size in sizes:
        piece = cipher_text[at:at + size]
        clear += decryptor.update(memoryview(piece))
        at += len(piece)
        if at == len(cipher_text):
            break
    assert bytes(clear) == data


def test_bad_padding_is_an_error():
    key, iv = DataKey(os.urandom(16)), os.urandom(16)
    cipher_text = AES.new(key.reveal(), AES.MODE_CBC, iv=iv).encrypt(b"x" * 31 + b"\x02")
    with pytest.raises(DecryptError, match="padding"):
        decrypt_cbc(cipher_text, key, iv)


def test_data_key_never_shows_itself():
    secret = bytes(range(16))
    shown = repr(DataKey(secret)) + str(DataKey(secret)) + repr([DataKey(secret)])
    assert secret.hex() not in shown and repr(secret) not in shown and "hidden" in shown


def test_crc32_mpeg2_check_value():
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # the catalogued check value of CRC-32/MPEG-2


def test_ts_sync_ratio_tells_clear_from_cipher():
    clear = (b"\x47" + bytes(187)) * 10
    assert ts_sync_ratio(clear) == 1.0
    assert ts_sync_ratio(encrypt_cbc(clear, DataKey(bytes(16)), bytes(16))) < 0.5


@pytest.mark.parametrize("uri, param, expected", [
    ("https://kms.example.com/get_hls_enc_key?key_id=08e765a4da", None, "08e765a4da"),
    ("https://k/get?app=live&KeyID=abc", None, "abc"),
    ("https://k/get?kid=x1", None, "x1"),
    ("https://k/get?keyid=x2&other=1", None, "x2"),
    ("https://k/get?token=t&id=zz", "id", "zz"),
    ("https://k/get?id=zz", None, None),
    ("key.bin", None, None),
])
def test_key_id_is_read_from_the_key_uri_query(uri, param, expected):
    assert key_id_of(uri, param) == expected


def test_implicit_iv_counts_from_media_sequence_and_skips_init_sections():
    text = "\n".join([
        "#EXTM3U", "#EXT-X-MEDIA-SEQUENCE:41", '#EXT-X-KEY:METHOD=AES-128,URI="k"',
        '#EXT-X-MAP:URI="init.mp4"', "#EXTINF:1,", "a.m4s", "#EXTINF:1,", "b.m4s",
        '#EXT-X-MAP:URI="init2.mp4"', "#EXTINF:1,", "c.m4s", "#EXT-X-ENDLIST", ""])
    playlist = parse(text, "/s/index.m3u8")
    assert [(p.uri, p.sequence, p.line) for p in playlist.parts] == [
        ("/s/init.mp4", None, 4), ("/s/a.m4s", 41, 6), ("/s/b.m4s", 42, 8),
        ("/s/init2.mp4", None, 9), ("/s/c.m4s", 43, 11)]
    assert [int.from_bytes(p.iv, "big") for p in playlist.segments] == [41, 42, 43]


def test_init_section_takes_the_key_in_force_at_its_tag():
    text = "\n".join([
        "#EXTM3U", '#EXT-X-MAP:URI="init.mp4"', '#EXT-X-KEY:METHOD=AES-128,URI="k"',
        "#EXTINF:1,", "a.m4s", "#EXT-X-ENDLIST", ""])
    init, segment = parse(text, "/s/index.m3u8").parts
    assert init.key is None and segment.key is not None


def test_segment_uris_lose_their_query_locally_but_keep_it_over_http():
    text = "#EXTM3U\n#EXTINF:1,\nseg.ts?app=live&x=1\n#EXT-X-ENDLIST\n"
    assert parse(text, "/rec/index.m3u8").parts[0].uri == "/rec/seg.ts"
    assert parse(text, "http://h/rec/index.m3u8").parts[0].uri == "http://h/rec/seg.ts?app=live&x=1"


def test_backoff_is_capped_full_jitter():
    slept = []
    backoff = Backoff(attempts=6, base=1.0, cap=4.0, sleep=slept.append, rng=random.Random(1))
    delays = list(backoff.delays())
    assert len(delays) == 5
    assert all(0 <= d <= c for d, c in zip(delays, [1, 2, 4, 4, 4]))
    backoff.wait(0.1, at_least=3.0)
    assert slept == [3.0]


def test_given_keys_win_over_the_key_cache(tmp_path):
    from hlsdecrypt.keys import key_chain

    (tmp_path / "k").write_text("{}")
    with key_chain(key="00" * 16, keys_file=str(tmp_path / "k"), cache=str(tmp_path / "c"), source="uri") as chain:
        assert [s.name for s in chain.sources] == ["the given key", f"keys file {tmp_path / 'k'}",
                                                   f"key cache {tmp_path / 'c'}", "key URI"]

"""AES-128 keys and CBC decryption, and sealing keys at rest: the only module that imports the cipher.

CBC decryption is parallel (P_i = D_K(C_i) XOR C_{i-1}), so it runs as one ECB pass over a
chunk followed by one XOR with the ciphertext shifted by a block. Both steps run at memory
speed in pycryptodome, about ten times faster than its block-by-block ``MODE_CBC``.

pycryptodome is imported with the first key used, not with this module: it takes longer to
import than ``hlsdecrypt --version`` may take in all.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Sequence

from .errors import DecryptError

BLOCK = 16
#: Up to this many bytes, the XOR of CBC runs on Python integers: quicker than a call into the
#: library, whose fixed cost is most of a short segment's (188 bytes: 3 µs, not 5 with cffi, 9 with ctypes).
SMALL = 2048
Buffer = bytes | bytearray | memoryview


class DataKey:
    """A 16-byte AES key whose repr and str never show the key."""

    __slots__ = ("_value", "_ecb", "_fingerprint")

    def __init__(self, value: bytes):
        if len(value) != BLOCK:
            raise ValueError(f"an AES-128 key is 16 bytes, not {len(value)}")
        self._value = bytes(value)
        self._ecb: Any = None
        self._fingerprint: str | None = None

    @classmethod
    def from_hex(cls, text: str) -> "DataKey":
        text = text.strip().lower().removeprefix("0x")
        if len(text) != 32:
            raise ValueError("an AES-128 key is 32 hex digits")
        return cls(bytes.fromhex(text))

    def fingerprint(self) -> str:
        """Tells keys apart without revealing them (a resume journal keeps these, never keys)."""
        if self._fingerprint is None:  # asked for every part written
            self._fingerprint = hashlib.sha256(b"hlsdecrypt journal\0" + self._value).hexdigest()[:16]
        return self._fingerprint

    def ecb(self) -> Any:
        """The key's AES-ECB cipher, made once and shared by every part under the key: making one
        costs more than decrypting a short segment. ECB keeps no state between calls, so threads
        may share it."""
        if self._ecb is None:
            from Crypto.Cipher import AES

            self._ecb = AES.new(self._value, AES.MODE_ECB)
        return self._ecb

    def reveal(self) -> bytes:
        """The key itself: for the cipher and for an explicitly requested key export only."""
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "DataKey(<hidden>)"

    __str__ = __repr__


class CbcDecryptor:
    """Decrypts one AES-128-CBC message of ``size`` bytes in chunks, and strips its padding.

    Chunks are multiples of 16 bytes; the last one ends the message and has its PKCS#7 padding
    checked byte by byte (a wrong key almost always breaks it) and removed. Small chunks keep
    the ciphertext, the clear bytes and the ECB pass in the CPU cache.
    """

    def __init__(self, key: DataKey, iv: bytes, size: int):
        if size == 0 or size % BLOCK:
            raise DecryptError(f"ciphertext length {size} is not a positive multiple of 16")
        self._ecb = key.ecb()
        self._previous = bytes(iv)  # the block before the next chunk: the IV, then ciphertext
        self._left = size

    def update(self, cipher_text: Buffer, out: memoryview | None = None) -> memoryview:
        """The clear bytes of the next chunk (into ``out`` when given, as long as the chunk, and apart
        from it: the ciphertext's last block is needed once the chunk is decrypted)."""
        cipher_text = memoryview(cipher_text)
        size = len(cipher_text)
        if size % BLOCK or size > self._left:
            raise DecryptError(f"chunk of {size} bytes does not fit the message")
        out = memoryview(bytearray(size)) if out is None else out[:size]
        if size <= SMALL:
            # Integers XOR quicker than a call into the library, which a short segment would pay
            # for twice; and bytes in and out keep the call cheap on pycryptodome's ctypes backend
            # (a clean install's), which takes ~4 µs more per memoryview.
            data = bytes(cipher_text)
            shifted = int.from_bytes(self._previous + data[:-BLOCK], "big")
            out[:] = (int.from_bytes(self._ecb.decrypt(data), "big") ^ shifted).to_bytes(size, "big")
            last = data[-BLOCK:]
        else:
            self._ecb.decrypt(cipher_text, output=out)
            first = int.from_bytes(out[:BLOCK], "big") ^ int.from_bytes(self._previous, "big")
            out[:BLOCK] = first.to_bytes(BLOCK, "big")
            from Crypto.Util.strxor import strxor  # here: a short segment never needs it

            # pycryptodome's stubs say bytes, but strxor takes any buffer: views avoid copies
            strxor(out[BLOCK:], cipher_text[:-BLOCK], output=out[BLOCK:])  # type: ignore[arg-type]
            last = bytes(cipher_text[-BLOCK:])
        self._left -= size
        if self._left:
            self._previous = last
            return out
        pad_len = out[-1]
        if not 1 <= pad_len <= BLOCK or out[-pad_len:] != bytes([pad_len]) * pad_len:
            raise DecryptError("bad PKCS#7 padding (wrong key?)")
        return out[:-pad_len]


def decrypt_cbc(data: Buffer, key: DataKey, iv: bytes, out: memoryview | None = None) -> memoryview:
    """Decrypt a whole AES-128-CBC message and strip its padding (see CbcDecryptor)."""
    return CbcDecryptor(key, iv, len(data)).update(data, out)


def decrypt_short(key: DataKey, messages: Sequence[tuple[Buffer, bytes]]) -> list[bytes | DecryptError]:
    """Whole short AES-128-CBC messages (``SMALL`` bytes at most, each with its IV) under one key,
    with one call into the library for all: its fixed cost is most of a short message's, and ECB,
    the first step of CBC, keeps no state from block to block. The clear bytes of each message in
    turn, padding stripped, or the DecryptError that message alone gets (the caller says which part)."""
    if any(not 0 < len(data) <= SMALL or len(data) % BLOCK for data, _ in messages):
        raise ValueError(f"short messages are positive multiples of 16 bytes, up to {SMALL}")
    blocks = memoryview(key.ecb().decrypt(b"".join(data for data, _ in messages)))
    clear: list[bytes | DecryptError] = []
    at = 0
    for data, iv in messages:
        size = len(data)
        shifted = int.from_bytes(iv + data[:-BLOCK], "big")  # the block before each: the IV, then ciphertext
        message = (int.from_bytes(blocks[at:at + size], "big") ^ shifted).to_bytes(size, "big")
        at += size
        pad_len = message[-1]
        if 1 <= pad_len <= BLOCK and message[-pad_len:] == bytes([pad_len]) * pad_len:
            clear.append(message[:-pad_len])
        else:
            clear.append(DecryptError("bad PKCS#7 padding (wrong key?)"))
    return clear


def encrypt_cbc(data: bytes, key: DataKey, iv: bytes) -> bytes:
    """AES-128-CBC with PKCS#7 padding, as HLS encrypts a segment."""
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import pad

    return AES.new(key.reveal(), AES.MODE_CBC, iv=iv).encrypt(pad(data, BLOCK))


NONCE = 12
TAG = 16


def seal(data: bytes, sealing_key: bytes, context: bytes) -> bytes:
    """AES-GCM: nonce, ciphertext and tag in one string. ``context`` (what the value is stored
    under) is authenticated but not stored, so a sealed value copied under another name does not open."""
    nonce = secrets.token_bytes(NONCE)
    from Crypto.Cipher import AES

    cipher = AES.new(sealing_key, AES.MODE_GCM, nonce=nonce)
    cipher.update(context)
    body, tag = cipher.encrypt_and_digest(data)
    return nonce + body + tag


def unseal(sealed: bytes, sealing_key: bytes, context: bytes) -> bytes | None:
    """What ``seal`` sealed; None when the sealing key or the context differ, or the value was altered."""
    if len(sealed) < NONCE + TAG:
        return None
    from Crypto.Cipher import AES

    cipher = AES.new(sealing_key, AES.MODE_GCM, nonce=sealed[:NONCE])
    cipher.update(context)
    try:
        return cipher.decrypt_and_verify(sealed[NONCE:-TAG], sealed[-TAG:])
    except ValueError:
        return None

"""AES-128 keys and CBC decryption: the only module that imports the cipher.

CBC decryption is parallel (P_i = D_K(C_i) XOR C_{i-1}), so it runs as one ECB pass over the
whole segment followed by one XOR with the ciphertext shifted by a block. Both steps run at
memory speed in pycryptodome, about ten times faster than its block-by-block ``MODE_CBC``.
"""

from __future__ import annotations

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad
from Crypto.Util.strxor import strxor

from .errors import DecryptError

BLOCK = 16


class DataKey:
    """A 16-byte AES key whose repr and str never show the key."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes):
        if len(value) != BLOCK:
            raise ValueError(f"an AES-128 key is 16 bytes, not {len(value)}")
        self._value = bytes(value)

    @classmethod
    def from_hex(cls, text: str) -> "DataKey":
        text = text.strip().lower().removeprefix("0x")
        if len(text) != 32:
            raise ValueError("an AES-128 key is 32 hex digits")
        return cls(bytes.fromhex(text))

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


def decrypt_cbc(data: bytes | bytearray | memoryview, key: DataKey, iv: bytes) -> memoryview:
    """Decrypt AES-128-CBC and strip PKCS#7 padding; raise DecryptError if the result is not valid.

    A wrong key or IV almost always shows up as invalid padding, which is why the padding is
    checked byte by byte rather than trusted.
    """
    size = len(data)
    if size == 0 or size % BLOCK:
        raise DecryptError(f"ciphertext length {size} is not a positive multiple of 16")
    cipher_text = memoryview(data)
    clear = bytearray(size)
    AES.new(key.reveal(), AES.MODE_ECB).decrypt(cipher_text, output=clear)
    out = memoryview(clear)
    strxor(out[:BLOCK], iv, output=out[:BLOCK])
    if size > BLOCK:
        strxor(out[BLOCK:], cipher_text[:-BLOCK], output=out[BLOCK:])
    pad_len = clear[-1]
    if not 1 <= pad_len <= BLOCK or clear[-pad_len:] != bytes([pad_len]) * pad_len:
        raise DecryptError("bad PKCS#7 padding (wrong key or IV?)")
    return out[:-pad_len]


def encrypt_cbc(data: bytes, key: DataKey, iv: bytes) -> bytes:
    """AES-128-CBC with PKCS#7 padding, as HLS encrypts a segment."""
    return AES.new(key.reveal(), AES.MODE_CBC, iv=iv).encrypt(pad(data, BLOCK))

"""hlsdecrypt: turn AES-128 encrypted HLS recordings into clear media, and check their encryption."""

__version__ = "0.1.0"

from .crypto import DataKey
from .errors import HlsDecryptError
from .fetch import Fetcher
from .keys import KeyChain, KeyFile, KeyUri, StaticKey
from .pipeline import DecryptResult, decrypt, load_media_playlist

__all__ = ["DataKey", "DecryptResult", "Fetcher", "HlsDecryptError", "KeyChain", "KeyFile", "KeyUri",
           "StaticKey", "decrypt", "load_media_playlist"]

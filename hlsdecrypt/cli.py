"""The command line: a thin layer over the Python API, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import __version__
from .crypto import DataKey
from .errors import EXIT_INTERRUPTED, HlsDecryptError, UsageError
from .fetch import Fetcher
from .keys import KeyChain, KeyFile, KeySource, KeyUri, StaticKey
from .pipeline import decrypt
from .retry import Backoff

log = logging.getLogger("hlsdecrypt")


def _key_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("keys (asked in this order)")
    g.add_argument("--key", metavar="HEX", help="one AES-128 key (32 hex digits) for every encrypted segment")
    g.add_argument("--keys", metavar="FILE", help="JSON object: KeyID or key URI -> 32 hex digits")
    g.add_argument("--key-id-param", metavar="NAME",
                   help="query parameter of the key URI that holds the KeyID (default: key_id, KeyID, kid)")
    g.add_argument("--no-key-uri", action="store_true", help="never fetch the playlist's key URIs")
    return p


def _fetch_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("fetching")
    g.add_argument("--variant", default="best", help="master playlists: best, worst or an index from 0 (default best)")
    g.add_argument("--jobs", type=int, default=4, metavar="N", help="segments fetched and decrypted at once (default 4)")
    g.add_argument("--timeout", type=float, default=20.0, metavar="S", help="HTTP timeout in seconds (default 20)")
    g.add_argument("--retries", type=int, default=3, metavar="N", help="HTTP retries on transient errors (default 3)")
    g.add_argument("--no-media-check", action="store_true",
                   help="do not require decrypted segments to begin like MPEG-TS, fMP4 or packed audio")
    g.add_argument("--allow-any-path", action="store_true",
                   help="let a local playlist refer to files outside its own folder")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="say more (never keys or credentials)")
    common.add_argument("-q", "--quiet", action="store_true", help="errors only")
    parser = argparse.ArgumentParser(prog="hlsdecrypt", description="Decrypt and check AES-128 encrypted HLS streams.")
    parser.add_argument("--version", action="version", version=f"hlsdecrypt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decrypt", parents=[common, _fetch_options(), _key_options()],
                       help="decrypt a stream into one clear file",
                       description="Decrypt an AES-128 HLS stream (playlist path or URL) into one clear file.")
    d.add_argument("source", help="M3U8 playlist: a local path or an http(s) URL")
    d.add_argument("-o", "--output", required=True, help="output file, or - for stdout")
    d.set_defaults(run=_run_decrypt)
    return parser


def make_fetcher(args: argparse.Namespace) -> Fetcher:
    if args.jobs < 1 or args.retries < 0 or args.timeout <= 0:
        raise UsageError("--jobs must be at least 1, --retries at least 0, --timeout positive")
    return Fetcher(timeout=args.timeout, backoff=Backoff(attempts=args.retries + 1),
                   allow_any_path=args.allow_any_path, pool_size=args.jobs)


def make_key_chain(args: argparse.Namespace, fetcher: Fetcher) -> KeyChain:
    sources: list[KeySource] = []
    if args.key:
        try:
            sources.append(StaticKey(DataKey.from_hex(args.key)))
        except ValueError:
            raise UsageError("--key wants 32 hex digits") from None
    if args.keys:
        sources.append(KeyFile(args.keys))
    if not args.no_key_uri:
        sources.append(KeyUri(fetcher))
    return KeyChain(sources)


def _run_decrypt(args: argparse.Namespace) -> int:
    fetcher = make_fetcher(args)
    keys = make_key_chain(args, fetcher)
    try:
        result = decrypt(args.source, args.output, keys, fetcher=fetcher, variant=args.variant,
                         key_id_param=args.key_id_param, jobs=args.jobs,
                         media_check=not args.no_media_check)
    finally:
        keys.close()
    where = "stdout" if args.output == "-" else args.output
    log.info("wrote %d segments, %d bytes, %d keys to %s", result.segments, result.bytes_written,
             len(keys.resolved), where)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hlsdecrypt: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        return args.run(args)
    except HlsDecryptError as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, with the traceback under --verbose
        log.error("unexpected error: %s: %s", type(exc).__name__, exc, exc_info=args.verbose)
        return 1

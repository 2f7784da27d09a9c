"""The command line: it parses arguments, calls the Python API, shows what came back, and is the
one place errors become exit codes.

Each command imports the library it needs when it runs: building the parser, which is all that
``--version`` and ``--help`` do, imports nothing but the defaults it shows.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from typing import TYPE_CHECKING, Sequence

from . import __version__, stop
from .defaults import DEADLINE, DEFAULT_ENDPOINT, DEFAULT_KEY_URI, DEFAULT_REGION, HTTP_JOBS, IV_MODES, KEY_SOURCES
from .errors import (EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, HlsDecryptError, OutputExists, SegmentError, UsageError,
                     VerificationFailed, plural)

if TYPE_CHECKING:
    from .fetch import Fetcher
    from .keys import KeyChain
    from .pipeline import DecryptResult
    from .progress import Progress
    from .verify import Report

log = logging.getLogger("hlsdecrypt")
SOURCE_HELP = "M3U8 playlist: a local path or an http(s) URL"
EXIT_CODES = """exit codes:
  0  done             1  a bug (please report it)   2  bad command-line use
  3  unusable input   4  a key is unavailable       5  a segment could not be fetched or decrypted
  6  a check failed   7  the output cannot be written (exists, is an input, disk full)
  130 interrupted     141 stdout closed by its reader"""
#: The library names an argument as a Python caller spells it; the command line, by its flag.
FLAGS = {"key": "--key", "keys_file": "--keys", "cache": "--key-cache", "source": "--key-source",
         "credentials": "--credentials", "endpoint": "--api-endpoint", "region": "--region", "rate": "--api-rate",
         "force": "--force", "resume": "--resume", "allow_any_path": "--allow-any-path",
         "expect_rotation": "--expect-rotation", "reference": "--reference", "iv": "--iv", "rotate": "--rotate",
         "ca_bundle": "--ca-bundle", "jobs": "--jobs", "retries": "--retries", "timeout": "--timeout",
         "deadline": "--deadline", "variant": "--variant", "output": "-o", "json": "--json", "junit": "--junit",
         "html": "--html", "export": "--export"}


def _key_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("keys (asked in this order)")
    g.add_argument("--key", metavar="HEX", help="one AES-128 key (32 hex digits) for every encrypted segment")
    g.add_argument("--keys", metavar="FILE", help="JSON object: KeyID or key URI -> 32 hex digits")
    g.add_argument("--key-id-param", metavar="NAME",
                   help="query parameter of the key URI that holds the KeyID (default: key_id, keyid or kid, "
                        "in any case)")
    g.add_argument("--key-cache", metavar="FILE",
                   help="keep keys fetched by KeyID in FILE (created 0600) and reuse them on later runs")
    g.add_argument("--key-source", choices=KEY_SOURCES, default="auto",
                   help="after --key, --keys and --key-cache: auto = the API for KeyIDs when credentials "
                        "are configured, then the key URI; api = the API only; uri = the key URI only; "
                        "none = neither")
    a = p.add_argument_group("the live service's key API (GetHLSEncryptDataKey)")
    a.add_argument("--credentials", metavar="FILE",
                   help="access keys: INI [default] access_key_id/secret_access_key[/session_token], or JSON "
                        "{ak, sk[, session_token]} (default: VOLC_ACCESSKEY/VOLC_SECRETKEY, then VOLCENGINE_ACCESS_KEY"
                        "/_SECRET_KEY[/_SESSION_TOKEN], then ~/.volc/credentials, ~/.volc/config)")
    a.add_argument("--api-endpoint", metavar="URL", default=None,
                   help=f"default: $HLSDECRYPT_API_ENDPOINT or {DEFAULT_ENDPOINT}")
    a.add_argument("--region", default=None, help=f"signing region (default {DEFAULT_REGION}; "
                                                  "ap-singapore-1 for open.byteplusapi.com)")
    a.add_argument("--api-rate", type=float, default=1.0, metavar="R",
                   help="requests per second for the account, shared by all hlsdecrypt processes (default 1)")
    return p


def _fetch_options(*, jobs: bool = True, media_check: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("fetching")
    g.add_argument("--variant", default="best", help="master playlists: best, worst or an index from 0 (default best)")
    if jobs:
        g.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="segments fetched at once (default 6 over http(s), 1 for local files)")
    g.add_argument("--timeout", type=float, default=20.0, metavar="S", help="HTTP timeout in seconds (default 20)")
    g.add_argument("--deadline", type=float, default=DEADLINE, metavar="S",
                   help=f"most seconds one HTTP request may take, however steadily data comes (default {DEADLINE:g}; "
                        "playlists and keys: 3 x --timeout)")
    g.add_argument("--retries", type=int, default=3, metavar="N", help="HTTP retries on transient errors (default 3)")
    if media_check:
        g.add_argument("--no-media-check", action="store_true",
                       help="do not require decrypted segments to begin like MPEG-TS, fMP4 or packed audio")
    g.add_argument("--allow-any-path", action="store_true",
                   help="let a local playlist refer to files outside its own folder")
    return p


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    """-v, -q and --version, accepted before the command and after it alike."""
    p = argparse.ArgumentParser(add_help=False)
    default: dict = {} if top else {"default": argparse.SUPPRESS}  # a subcommand must not undo what came before
    p.add_argument("-v", "--verbose", action="store_true", help="say more (never keys or credentials)", **default)
    p.add_argument("-q", "--quiet", action="store_true", help="errors only (verify: and the failing checks)",
                   **default)
    p.add_argument("--version", action="version", version=f"hlsdecrypt {__version__}")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hlsdecrypt", description="Decrypt and check AES-128 encrypted HLS streams.",
                                     parents=[_common_options(top=True)], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _common_options(top=False)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decrypt", parents=[common, _fetch_options(media_check=True), _key_options()],
                       help="decrypt a stream into one clear file", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Decrypt an AES-128 HLS stream (playlist path or URL) into one clear file.")
    d.add_argument("sources", nargs="*", metavar="SOURCE", help=SOURCE_HELP)
    d.add_argument("-o", "--output", help="output file, or - for stdout; or a folder to write into, "
                                          "named after each source")
    d.add_argument("--batch", metavar="FILE", help="decrypt many streams: one 'SOURCE OUTPUT' per line")
    d.add_argument("--resume", action="store_true",
                   help="keep a journal beside the partial output, and continue an interrupted run from it")
    d.add_argument("--skip-missing", action="store_true",
                   help="write what can be fetched, list the segments that could not, and exit 5")
    d.add_argument("--force", action="store_true",
                   help="replace an existing output file (a batch otherwise skips streams whose output exists)")
    d.set_defaults(run=_run_decrypt)
    k = sub.add_parser("keys", parents=[common, _fetch_options(jobs=False), _key_options()],
                       help="list a stream's keys (KeyIDs) and export them",
                       description="List the distinct keys of a stream with their segments; with --export, "
                                   "fetch them and write them as the JSON that --keys reads.")
    k.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    k.add_argument("--export", metavar="FILE", help="fetch every key and write them to FILE (created 0600)")
    k.set_defaults(run=_run_keys)
    v = sub.add_parser("verify", parents=[common, _fetch_options(), _key_options()],
                       help="check, with evidence, that streams are encrypted as they should be",
                       description="Check the encryption of one or more streams: coverage, ciphertext, decryption, "
                                   "keys, IVs, and optionally a clear reference. Exit 0 when no check fails, "
                                   "6 when any does.")
    v.add_argument("sources", nargs="*", metavar="SOURCE", help=SOURCE_HELP)
    v.add_argument("--batch", metavar="FILE", help="verify many streams: one SOURCE per line (a decrypt batch "
                                                    "file's 'SOURCE OUTPUT' lines serve too)")
    v.add_argument("--reference", metavar="CLEAR",
                   help="a clear recording that the decrypted stream must equal byte for byte (one stream only)")
    v.add_argument("--expect-rotation", type=int, metavar="N", help="require a new key at least every N segments")
    v.add_argument("--strict", action="store_true",
                   help="reused IVs, plain-http key URIs and clear init sections fail instead of warn")
    v.add_argument("--json", metavar="FILE", help="write the report as JSON (schema in the README); - for stdout")
    v.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML, one test suite per stream; "
                                                   "- for stdout")
    v.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page with a "
                                                  "timeline of each stream; - for stdout")
    v.set_defaults(run=_run_verify)
    e = sub.add_parser("encrypt", parents=[common, _fetch_options(jobs=False)],
                       help="encrypt a clear stream (to build test streams)",
                       description="AES-128 encrypt a clear HLS stream into OUTDIR, with keys.json beside it.")
    e.add_argument("source", metavar="SOURCE", help="clear M3U8 playlist: a local path or an http(s) URL")
    e.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="an empty or new folder")
    e.add_argument("--rotate", type=int, default=0, metavar="N", help="a new key every N segments (default: one key)")
    e.add_argument("--iv", choices=IV_MODES, default="implicit",
                   help="implicit (the media sequence), explicit (random, per segment) or zero, as the live service")
    e.add_argument("--key-uri", default=DEFAULT_KEY_URI, metavar="TEMPLATE",
                   help="key URI: {n} is the key number, {key_id} a KeyID, e.g. "
                        "'https://kms.example.com/get_hls_enc_key?key_id={key_id}' (default key{n}.bin, files)")
    e.add_argument("--keys", metavar="FILE", help="use these keys (KeyID -> hex), in order, instead of random ones")
    e.set_defaults(run=_run_encrypt)
    return parser


# -- from arguments to library objects ---------------------------------------------------

def _fetcher(args: argparse.Namespace) -> Fetcher:
    from .fetch import Fetcher

    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise UsageError("jobs must be at least 1", option="jobs")
    return Fetcher(timeout=args.timeout, deadline=args.deadline, retries=args.retries,
                   allow_any_path=args.allow_any_path,
                   pool_size=max(jobs or 0, HTTP_JOBS) + 2)  # the key thread fetches too


def _keys(args: argparse.Namespace, fetcher: Fetcher, *, stop_after_failure: bool = True) -> KeyChain:
    from .keys import key_chain

    return key_chain(key=args.key, keys_file=args.keys, cache=args.key_cache, source=args.key_source,
                     credentials=args.credentials, endpoint=args.api_endpoint, region=args.region,
                     rate=args.api_rate, timeout=args.timeout, fetcher=fetcher,
                     stop_after_failure=stop_after_failure)


def _inputs(args: argparse.Namespace) -> list[str]:
    """Files of this run that no output may replace (the playlists and segments are added by decrypt)."""
    return [path for path in (args.keys, args.key_cache, args.credentials, args.batch) if path]


def _batch_rows(path: str, columns: int) -> list[list[str]]:
    """The entries of a batch file: ``columns`` fields each (verify reads the first of longer lines)."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--batch {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    bad = next((n for n, row in enumerate(rows, 1) if len(row) < columns or (columns == 2 and len(row) > 2)), None)
    if bad:
        raise UsageError(f"--batch {path}: entry {bad} is not {'SOURCE OUTPUT' if columns == 2 else 'SOURCE'}")
    return rows


# -- decrypt -----------------------------------------------------------------------------

def _run_decrypt(args: argparse.Namespace) -> int:
    jobs = _decrypt_jobs(args)
    fetcher = _fetcher(args)
    with _keys(args, fetcher, stop_after_failure=len(jobs) == 1) as keys:
        if len(jobs) == 1 and not args.batch:
            return _decrypt_one(args, *jobs[0], keys, fetcher)
        return _decrypt_batch(args, jobs, keys, fetcher)


def _decrypt_jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(source, output) pairs, checked before any work: no two streams may share an output."""
    if args.resume and args.output == "-":
        raise UsageError("--resume needs an output file, not stdout")
    if args.batch:
        if args.sources:
            raise UsageError("give sources on the command line or with --batch, not both")
        if args.output:
            raise UsageError("--batch names each output itself; -o has no meaning with it")
        jobs = [(source, output) for source, output in _batch_rows(args.batch, 2)]
    elif not args.sources:
        raise UsageError("decrypt needs a SOURCE (or --batch FILE)")
    elif not args.output:
        raise UsageError("decrypt needs -o OUTPUT")
    elif len(args.sources) > 1 and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: with several sources, -o names an existing folder")
    else:
        jobs = [(source, args.output) for source in args.sources]
    _refuse_shared_outputs(jobs)
    return jobs


def _refuse_shared_outputs(jobs: list[tuple[str, str]]) -> None:
    """``a/rec/index.m3u8`` and ``b/rec/index.m3u8`` would both become ``rec.ts``: say so now."""
    from .uris import stream_name

    seen: dict[str, str] = {}
    for source, output in jobs:
        if output == "-":
            continue
        name = os.path.realpath(output)
        if os.path.isdir(output):
            name = os.path.join(name, stream_name(source)) + ".*"
        if name in seen:
            raise UsageError(f"{seen[name]} and {source} would both be written to {name}; "
                             "name each output with --batch FILE ('SOURCE OUTPUT' per line)")
        seen[name] = source


def _decrypt(args: argparse.Namespace, source: str, output: str, keys: KeyChain, fetcher: Fetcher,
             progress: Progress | None = None) -> DecryptResult:
    from .pipeline import decrypt

    return decrypt(source, output, keys=keys, fetcher=fetcher, variant=args.variant, key_id_param=args.key_id_param,
                   jobs=args.jobs, media_check=not args.no_media_check, resume=args.resume,
                   skip_missing=args.skip_missing, force=args.force, inputs=_inputs(args), progress=progress)


def _decrypt_one(args: argparse.Namespace, source: str, output: str, keys: KeyChain, fetcher: Fetcher) -> int:
    from .progress import Progress

    show = sys.stderr.isatty() and not args.quiet
    result = _decrypt(args, source, output, keys, fetcher, Progress() if show else None)
    where = "stdout" if result.output == "-" else result.output
    gaps = f" (skipped {plural(result.gaps, 'EXT-X-GAP segment')})" if result.gaps else ""
    log.info("wrote %s%s, %s, %s to %s", plural(result.written_segments, "segment"), gaps,
             _megabytes(result.bytes_written), plural(result.keys, "key"), where)
    if result.missing:
        log.error("error: %d of %s are missing from %s:", len(result.missing), plural(result.segments, "segment"),
                  where)
        for gap in result.missing:
            log.error("  %s", gap)
        return SegmentError.exit_code
    return 0


def _decrypt_batch(args: argparse.Namespace, jobs: list[tuple[str, str]], keys: KeyChain, fetcher: Fetcher) -> int:
    """Each stream in turn, with one key chain (so one cache and one rate limit); a failure
    is reported and the others go on; an output that exists already is skipped (unless
    ``--force``), so that running a batch again finishes only what is missing.
    Exit: 0, or the code of the first failure."""
    failures: list[tuple[str, int]] = []
    skipped = 0
    total = len(jobs)
    for n, (source, output) in enumerate(jobs, 1):
        keys.next_stream()
        try:
            result = _decrypt(args, source, output, keys, fetcher)
        except OutputExists as exc:
            log.info("[%d/%d] skipped %s: %s", n, total, source, exc.message.replace(" (force=True replaces it)", ""))
            skipped += 1
            continue
        except HlsDecryptError as exc:
            log.error("[%d/%d] FAILED %s: %s", n, total, source, _said(exc))
            failures.append((source, exc.exit_code))
            continue
        if result.missing:
            log.error("[%d/%d] FAILED %s: %d of %s missing: %s", n, total, source, len(result.missing),
                      plural(result.segments, "segment"), "; ".join(result.missing))
            failures.append((source, SegmentError.exit_code))
            continue
        log.info("[%d/%d] ok %s -> %s (%s, %s)", n, total, source, result.output,
                 plural(result.written_segments, "segment"), _megabytes(result.bytes_written))
    done = total - len(failures) - skipped
    log.log(logging.ERROR if failures else logging.INFO, "%d of %s decrypted%s%s", done, plural(total, "stream"),
            f", {skipped} skipped (output exists)" if skipped else "",
            f"; failed: {', '.join(s for s, _ in failures)}" if failures else "")
    return failures[0][1] if failures else 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


# -- keys, verify, encrypt ---------------------------------------------------------------

def _run_keys(args: argparse.Namespace) -> int:
    from .inventory import export_keys, list_keys
    from .output import check_folder

    fetcher = _fetcher(args)
    if not args.export:
        listing = list_keys(args.source, fetcher=fetcher, variant=args.variant, key_id_param=args.key_id_param)
        sys.stdout.write(listing.table())
        return 0
    check_folder(args.export, "export")  # before the playlist is read
    with _keys(args, fetcher) as keys:
        listing = export_keys(args.source, args.export, keys=keys, fetcher=fetcher, variant=args.variant,
                              key_id_param=args.key_id_param)
    sys.stdout.write(listing.table())
    log.info("exported %s to %s", plural(len(listing.keys), "key"), args.export)
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from .html_report import write_html
    from .output import check_folder
    from .report import write_json, write_junit, write_table
    from .verify import verify

    sources = _verify_sources(args)
    reports = (("json", args.json), ("junit", args.junit), ("html", args.html))
    for option, target in reports:
        if target:
            check_folder(target, option)
    to_stdout = [FLAGS[option] for option, target in reports if target == "-"]
    if len(to_stdout) > 1:
        raise UsageError(f"only one report can go to stdout, not {' and '.join(to_stdout)}")
    table = sys.stderr if to_stdout else sys.stdout  # stdout carries the report asked for
    fetcher = _fetcher(args)
    done: list[Report] = []
    errors: list[tuple[str, HlsDecryptError]] = []
    with _keys(args, fetcher, stop_after_failure=False) as keys:
        for source in sources:
            keys.next_stream()
            try:
                report = verify(source, keys=keys, fetcher=fetcher, variant=args.variant,
                                key_id_param=args.key_id_param, reference=args.reference,
                                expect_rotation=args.expect_rotation, strict=args.strict, jobs=args.jobs)
            except HlsDecryptError as exc:
                if len(sources) == 1:
                    raise
                log.error("%s: %s", source, _said(exc))
                errors.append((source, exc))
                continue
            done.append(report)
            if not args.quiet or report.failed:
                write_table(report, table, failures_only=args.quiet)
    several = len(sources) > 1
    for target, write in ((args.json, write_json), (args.junit, write_junit), (args.html, write_html)):
        if target:
            write(done if several else done[0], target)
    failed = [r.source for r in done if r.failed]
    if several:
        log.log(logging.ERROR if failed or errors else logging.INFO, "%s: %d passed, %d failed%s",
                plural(len(sources), "stream"), len(done) - len(failed), len(failed) + len(errors),
                f" ({', '.join(failed + [s for s, _ in errors])})" if failed or errors else "")
    if failed:
        return VerificationFailed.exit_code
    return errors[0][1].exit_code if errors else 0


def _verify_sources(args: argparse.Namespace) -> list[str]:
    if args.batch and args.sources:
        raise UsageError("give sources on the command line or with --batch, not both")
    sources = [row[0] for row in _batch_rows(args.batch, 1)] if args.batch else args.sources
    if not sources:
        raise UsageError("verify needs a SOURCE (or --batch FILE)")
    if args.reference and len(sources) > 1:
        raise UsageError("--reference is the clear recording of one stream: verify that stream alone")
    return sources


def _run_encrypt(args: argparse.Namespace) -> int:
    from .encrypt import encrypt

    result = encrypt(args.source, args.output, fetcher=_fetcher(args), rotate=args.rotate, iv=args.iv,
                     key_uri=args.key_uri, keys_file=args.keys, variant=args.variant)
    log.info("wrote %s: %s under %s, keys in %s", result.playlist, plural(result.segments, "segment"),
             plural(result.keys, "key"), result.playlist.parent / "keys.json")
    return 0


# -- errors and signals ------------------------------------------------------------------

def _said(exc: HlsDecryptError) -> str:
    """The error as the command line says it: the library's argument names become flags."""
    text = str(exc)
    flag = FLAGS.get(exc.option or "")
    if flag:
        text = re.sub(rf"\b{exc.option}(=True\b|=)?", lambda m: flag + (" " if m.group(1) == "=" else ""), text)
    return text


def _interrupt(signum: int, frame: object) -> None:
    stop.request_stop()  # worker threads blocked on a server or a wait end now, not when it answers
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hlsdecrypt: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if on_main_thread:  # SIGTERM cleans up as Ctrl-C does
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.verbose and args.quiet:
            raise UsageError("-v and -q ask for opposite things: give one")
        return args.run(args)
    except HlsDecryptError as exc:
        log.error("error: %s", _said(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _end_line()
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (| head): end quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not complain
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: say so in one line, with the traceback under --verbose
        log.error("unexpected error: %s: %s (a bug: please report it)", type(exc).__name__, exc,
                  exc_info=args.verbose)
        return 1
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _end_line() -> None:
    """Leave a progress line that Ctrl-C interrupted, so that the next message starts a line of its own."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")

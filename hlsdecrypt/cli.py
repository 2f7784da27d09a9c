"""The command line: it parses arguments, calls the Python API, shows what came back, and is the
one place errors become exit codes.

Each command imports the library it needs when it runs: building the parser, which is all that
``--version`` and ``--help`` do, imports nothing but the defaults it shows. The arguments are parsed
before logging, signals and the config file are set up, so that those two end before any of that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from . import __version__, stop
from .defaults import (DEADLINE, DEFAULT_ENDPOINT, DEFAULT_KEY_URI, DEFAULT_REGION, HTTP_JOBS, IV_MODES, KEY_SOURCES,
                       KEY_STORE_ENV, SHELLS)
from .errors import (EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, HlsDecryptError, KeyStoreError, OutputError,
                     OutputExists, SegmentError, UsageError, VerificationFailed, plural)

if TYPE_CHECKING:
    import logging

    from .fetch import Fetcher
    from .keys import KeyChain
    from .live import FollowResult
    from .pipeline import DecryptResult
    from .progress import Progress
    from .summary import RunSummary
    from .verification import Report

#: The "hlsdecrypt" logger, set by ``main`` once the arguments are parsed: --version and --help never import logging.
log: logging.Logger
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
         "html": "--html", "export": "--export", "renditions": "--audio", "remux": "--remux",
         "json-summary": "--json-summary", "duration": "--duration",
         "expect_rotation_seconds": "--expect-rotation", "key_within": "--key-within"}


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
    g.add_argument("--key-store", metavar="URL",
                   help="many machines: keep keys, and the API's rate limit, in Redis (redis:// or rediss://, "
                        f"default ${KEY_STORE_ENV}); keys sealed under $HLSDECRYPT_KEY_STORE_SECRET when set")
    g.add_argument("--key-source", choices=KEY_SOURCES, default="auto",
                   help="after --key, --keys, --key-cache and --key-store: auto = the API for KeyIDs when credentials "
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


def _fetch_options(*, jobs: bool = True, media_check: bool = False, every_variant: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("fetching")
    if every_variant:
        g.add_argument("--variant", default=None, help="master playlists: check only this variant: best, worst or an "
                                                        "index from 0 (default: every variant and rendition)")
    else:
        g.add_argument("--variant", default="best",
                       help="master playlists: best, worst or an index from 0 (default best)")
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
    r = p.add_argument_group("requests (for playlists, segments and keys; never for the key API)")
    r.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="send this header, e.g. 'Referer: https://player.example.com/' (repeatable); "
                        "values may be secrets: they are never shown")
    r.add_argument("--user-agent", metavar="TEXT", help="the User-Agent header (default hlsdecrypt)")
    r.add_argument("--cookies", metavar="FILE",
                   help="send the cookies of this Netscape cookies.txt, as browsers export it and curl and "
                        "yt-dlp read it")
    r.add_argument("--proxy", metavar="URL",
                   help="send requests through this proxy, e.g. http://HOST:PORT (default: the HTTP_PROXY, "
                        "HTTPS_PROXY and NO_PROXY environment variables)")
    r.add_argument("--ca-bundle", metavar="FILE",
                   help="trust the CA certificates of this PEM file instead of the default ones (a private CA)")
    r.add_argument("--append-url-params", action="store_true",
                   help="give the playlist URL's query string (a signature, a token) to the URIs it lists "
                        "without one, on the same host only")
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


#: The subcommands, and the line each has in ``hlsdecrypt --help``.
COMMANDS = {
    "decrypt": "decrypt a stream into one clear file",
    "keys": "list a stream's keys (KeyIDs) and export them",
    "verify": "check, with evidence, that streams are encrypted as they should be",
    "encrypt": "encrypt a clear stream (to build test streams)",
    "completion": "print a shell completion script: bash, zsh or fish",
    "man": "print the manual page (roff)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. With ``command``, only that subcommand gets its options, and the others only
    their line of help (for ``--help`` and the errors that list them): a run needs no more, and
    building every option of every command is most of what ``--version`` would otherwise cost."""
    parser = argparse.ArgumentParser(prog="hlsdecrypt", description="Decrypt and check AES-128 encrypted HLS streams.",
                                     parents=[_common_options(top=True)], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _common_options(top=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, line in COMMANDS.items():
        if command is None or command == name:
            _BUILDERS[name](sub, common)
        else:
            sub.add_parser(name, help=line)
    return parser


def _decrypt_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("decrypt", parents=[common, _fetch_options(media_check=True), _key_options()],
                       help=COMMANDS["decrypt"], epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Decrypt an AES-128 HLS stream (playlist path or URL) into one clear file.")
    d.add_argument("sources", nargs="*", metavar="SOURCE", help=SOURCE_HELP)
    d.add_argument("-o", "--output", help="output file, or - for stdout; or a folder to write into, "
                                          "named after each source")
    d.add_argument("--batch", metavar="FILE", help="decrypt many streams: one 'SOURCE OUTPUT' per line")
    d.add_argument("--shard", metavar="I/N", help="take only the I-th of N shares of the streams (I from 1): "
                                                 "entries I, I+N, I+2N, ... in order")
    d.add_argument("--resume", action="store_true",
                   help="keep a journal beside the partial output, and continue an interrupted run from it")
    d.add_argument("--skip-missing", action="store_true",
                   help="write what can be fetched, list the segments that could not, and exit 5")
    d.add_argument("--force", action="store_true",
                   help="replace an existing output file (a batch otherwise skips streams whose output exists); "
                        "with -o -, write to stdout even when it is a terminal")
    d.add_argument("--json-summary", metavar="FILE",
                   help="write what the run did as JSON (shape in the README): outputs, segments, gaps, missing "
                        "parts, keys and their sources, time taken; - for stdout")
    d.add_argument("--audio", metavar="NAME|all|none", default="all",
                   help="master playlists: the chosen variant's audio and subtitle renditions to write too, each "
                        "beside the output (film.audio-English.ts): all (default), none, or one NAME or LANGUAGE")
    d.add_argument("--remux", choices=("mp4", "mkv"),
                   help="after the byte-exact decrypt, stream-copy video and renditions into OUTPUT, one playable "
                        "file (PyAV: pip install 'hlsdecrypt[remux]', else ffmpeg on PATH)")
    d.add_argument("--keep-ts", action="store_true", help="with --remux: keep the byte-exact .ts files beside it")
    d.add_argument("--follow", action="store_true",
                   help="a live stream: reload its playlist and append each new segment until EXT-X-ENDLIST, "
                        "--duration or Ctrl-C/SIGTERM (a normal stop: the file so far is kept, exit 0)")
    d.add_argument("--duration", type=_duration, metavar="TIME",
                   help="with --follow: stop once TIME of media is written (2h, 90m, 1h30m, 45s)")
    d.set_defaults(run=_run_decrypt)


def _keys_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    k = sub.add_parser("keys", parents=[common, _fetch_options(jobs=False), _key_options()],
                       help=COMMANDS["keys"],
                       description="List the distinct keys of a stream with their segments; with --export, "
                                   "fetch them and write them as the JSON that --keys reads.")
    k.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    k.add_argument("--export", metavar="FILE", help="fetch every key and write them to FILE (created 0600)")
    k.set_defaults(run=_run_keys)


def _verify_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    v = sub.add_parser("verify", parents=[common, _fetch_options(every_variant=True), _key_options()],
                       help=COMMANDS["verify"],
                       description="Check the encryption of one or more streams: coverage, ciphertext, decryption, "
                                   "keys, IVs, and optionally a clear reference. Exit 0 when no check fails, "
                                   "6 when any does.")
    v.add_argument("sources", nargs="*", metavar="SOURCE", help=SOURCE_HELP)
    v.add_argument("--batch", metavar="FILE", help="verify many streams: one SOURCE per line (a decrypt batch "
                                                    "file's 'SOURCE OUTPUT' lines serve too)")
    v.add_argument("--reference", metavar="CLEAR",
                   help="a clear recording that the decrypted stream must equal byte for byte (one stream only)")
    v.add_argument("--follow", type=_duration, metavar="DURATION",
                   help="a live channel: watch it for DURATION (10m, 1h) and check every segment published, "
                        "the key period, key fetch times, lost segments and stalls")
    v.add_argument("--expect-rotation", type=_rotation, metavar="N|TIME",
                   help="require a new key at least every N segments; or a key period of TIME (60s, 2m: the "
                        "channel's CycleTime) give or take one segment; under --follow, N is seconds")
    v.add_argument("--key-within", type=float, metavar="S",
                   help="with --follow: each new key must be fetched within S seconds of appearing "
                        "(default: 3 target durations)")
    v.add_argument("--strict", action="store_true",
                   help="reused IVs, plain-http key URIs and clear init sections fail instead of warn")
    v.add_argument("--json", metavar="FILE", help="write the report as JSON (schema in the README); - for stdout")
    v.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML, one test suite per stream; "
                                                   "- for stdout")
    v.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page with a "
                                                  "timeline of each stream; - for stdout")
    v.set_defaults(run=_run_verify)


def _encrypt_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser("encrypt", parents=[common, _fetch_options(jobs=False)],
                       help=COMMANDS["encrypt"],
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


def _completion_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("completion", parents=[common], help=COMMANDS["completion"],
                       description="Print a completion script for SHELL, generated from this version's options. "
                                   "bash: source <(hlsdecrypt completion bash); zsh: the same after compinit; "
                                   "fish: hlsdecrypt completion fish | source.")
    c.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    c.set_defaults(run=_run_completion)


def _man_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("man", parents=[common], help=COMMANDS["man"],
                       description="Print the manual page, hlsdecrypt(1), as roff: read it with "
                                   "hlsdecrypt man | man -l -, or install it as hlsdecrypt.1.")
    m.set_defaults(run=_run_man)


_BUILDERS = {"decrypt": _decrypt_parser, "keys": _keys_parser, "verify": _verify_parser,
             "encrypt": _encrypt_parser, "completion": _completion_parser, "man": _man_parser}


# -- from arguments to library objects ---------------------------------------------------

def _fetcher(args: argparse.Namespace) -> Fetcher:
    from .fetch import Fetcher
    from .http import request_options

    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise UsageError("jobs must be at least 1", option="jobs")
    return Fetcher(timeout=args.timeout, deadline=args.deadline, retries=args.retries,
                   allow_any_path=args.allow_any_path, append_url_params=args.append_url_params,
                   request_options=request_options(headers=args.header, user_agent=args.user_agent,
                                                   cookies=args.cookies, proxy=args.proxy, ca_bundle=args.ca_bundle),
                   pool_size=max(jobs or 0, HTTP_JOBS) + 2)  # the key thread fetches too


def _keys(args: argparse.Namespace, fetcher: Fetcher, *, stop_after_failure: bool = True) -> KeyChain:
    from .keys import key_chain

    return key_chain(key=args.key, keys_file=args.keys, cache=args.key_cache,
                     store=args.key_store or os.environ.get(KEY_STORE_ENV), source=args.key_source,
                     credentials=args.credentials, endpoint=args.api_endpoint, region=args.region,
                     rate=args.api_rate, timeout=args.timeout, fetcher=fetcher,
                     stop_after_failure=stop_after_failure)


def _inputs(args: argparse.Namespace) -> list[str]:
    """Files of this run that no output may replace (the playlists and segments are added by decrypt)."""
    return [path for path in (args.keys, args.key_cache, args.credentials, args.batch, getattr(args, "cookies", None),
                              getattr(args, "ca_bundle", None)) if path]


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
    if args.follow or args.duration is not None:
        return _follow(args)
    jobs = _decrypt_jobs(args)
    fetcher = _fetcher(args)
    with _summary(args) as finished, _keys(args, fetcher, stop_after_failure=len(jobs) == 1) as keys:
        if len(jobs) == 1 and not args.batch:
            return finished(_decrypt_one(args, *jobs[0], keys, fetcher))
        return finished(_decrypt_batch(args, jobs, keys, fetcher))


def _decrypt_jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(source, output) pairs, checked before any work: no two streams may share an output."""
    from .output import check_folder

    if args.resume and args.output == "-":
        raise UsageError("--resume needs an output file, not stdout")
    if args.keep_ts and not args.remux:
        raise UsageError("--keep-ts keeps the .ts files that --remux would remove: give --remux too")
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
    to_stdout = any(output == "-" for _, output in jobs)
    if args.json_summary:
        check_folder(args.json_summary, "json-summary")
        _refuse_report_over(args.json_summary, "--json-summary",
                            [path for job in jobs for path in job] + _inputs(args))
        if args.json_summary == "-" and to_stdout:
            raise UsageError("--json-summary -: stdout carries the clear stream (-o -); write the summary to a file")
    if not args.force and to_stdout and sys.stdout.isatty():
        raise OutputError("-o -: stdout is a terminal, and the clear stream is binary: send it to a file or a "
                          "pipe (-o FILE, | PLAYER), or add --force to write it to the terminal all the same")
    if args.shard:  # after the check above, so that every machine refuses the same list
        from .shard import Shard

        jobs = Shard.parse(args.shard).take(jobs)
    return jobs


def _refuse_report_over(report: str, option: str, files: list[str]) -> None:
    """A report is written over nothing else the run reads or writes (an output, a playlist, a key file)."""
    if report == "-":
        return
    real = os.path.realpath(report)
    clash = next((f for f in files if f != "-" and os.path.realpath(f) == real), None)
    if clash:
        raise UsageError(f"{option} {report}: is {clash}, which this run reads or writes; choose another file")


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
             progress: Progress | None = None, *, batch: bool = False) -> DecryptResult:
    """One stream; with --json-summary, its outcome goes into the summary (a batch skips outputs that exist)."""
    from .pipeline import decrypt

    summary: RunSummary | None = getattr(args, "summary", None)  # set by _summary under --json-summary
    began = time.monotonic()
    try:
        result = decrypt(source, output, keys=keys, fetcher=fetcher, variant=args.variant,
                         key_id_param=args.key_id_param, jobs=args.jobs, media_check=not args.no_media_check,
                         resume=args.resume, skip_missing=args.skip_missing, force=args.force, inputs=_inputs(args),
                         progress=progress, renditions=args.audio, remux=args.remux, keep_ts=args.keep_ts)
    except (HlsDecryptError, KeyboardInterrupt) as exc:
        if summary is not None:
            from .summary import FAILED, SKIPPED

            skipped = batch and isinstance(exc, OutputExists)
            code = exc.exit_code if isinstance(exc, HlsDecryptError) else EXIT_INTERRUPTED
            summary.ended(source, output, status=SKIPPED if skipped else FAILED, exit_code=code,
                          message=_said(exc) if isinstance(exc, HlsDecryptError) else "interrupted",
                          seconds=time.monotonic() - began)
        raise
    if summary is not None:
        summary.decrypted(source, output, result, keys, time.monotonic() - began)
    return result


def _progress(args: argparse.Namespace, keys: KeyChain, *, label: str = "",
              transient: bool = False) -> Progress | None:
    """A redrawn line on a terminal, a plain line now and then in a log; none under -q."""
    from .progress import Progress

    return None if args.quiet else Progress(sys.stderr, keys=keys.progress, label=label, transient=transient)


@contextlib.contextmanager
def _summary(args: argparse.Namespace) -> Iterator[Callable[[int], int]]:
    """With --json-summary, collect each stream's outcome (in ``_decrypt``) and write the summary at the
    end, however it comes; ``finished(code)`` gives the exit code it reports."""
    codes = [1]

    def finished(code: int) -> int:
        codes[0] = code
        return code

    if not args.json_summary:
        yield finished
        return
    # imported only when a summary is asked for: it brings the verify reports' writers
    from .summary import RunSummary

    args.summary = RunSummary()
    try:
        yield finished
    except HlsDecryptError as exc:
        codes[0] = exc.exit_code
        raise
    except KeyboardInterrupt:
        codes[0] = EXIT_INTERRUPTED
        raise
    finally:
        args.summary.write(args.json_summary, codes[0])


def _decrypt_one(args: argparse.Namespace, source: str, output: str, keys: KeyChain, fetcher: Fetcher) -> int:
    result = _decrypt(args, source, output, keys, fetcher, _progress(args, keys))
    where = "stdout" if result.output == "-" else result.output
    gaps = f" (skipped {plural(result.gaps, 'EXT-X-GAP segment')})" if result.gaps else ""
    kept = where if not result.remuxed or args.keep_ts else "a temporary file"
    log.info("wrote %s%s, %s, %s to %s", plural(result.written_segments, "segment"), gaps,
             _megabytes(result.bytes_written), plural(result.keys, "key"), kept)
    for rendition in result.renditions:
        log.info("wrote the %s rendition: %s, %s, to %s", rendition.label, plural(rendition.written_segments, "segment"),
                 _megabytes(rendition.bytes_written), rendition.output if args.keep_ts or not result.remuxed
                 else "a temporary file")
    if result.remuxed:
        log.info("remuxed %s into %s", " and ".join(["the video", *(r.label for r in result.renditions)]),
                 result.remuxed)
    result_missing = [*result.missing, *(m for r in result.renditions for m in r.missing)]
    if result_missing:
        log.error("error: %d of %s are missing from %s:", len(result_missing), plural(result.segments, "segment"),
                  where)
        for gap in result_missing:
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
            shown = _progress(args, keys, label=f"[{n}/{total}] ", transient=True)
            result = _decrypt(args, source, output, keys, fetcher, shown, batch=True)
        except OutputExists as exc:
            log.info("[%d/%d] skipped %s: %s", n, total, source, exc.message.replace(" (force=True replaces it)", ""))
            skipped += 1
            continue
        except KeyStoreError:
            raise  # the whole fleet's store and limit: going on alone would break the account's limit
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
    say = log.error if failures else log.info
    say("%d of %s decrypted%s%s", done, plural(total, "stream"),
        f", {skipped} skipped (output exists)" if skipped else "",
        f"; failed: {', '.join(s for s, _ in failures)}" if failures else "")
    return failures[0][1] if failures else 0


def _follow(args: argparse.Namespace) -> int:
    """decrypt --follow: one live stream into one file; a gap exits 5 at the end unless --skip-missing."""
    from .live import follow

    if not args.follow:
        raise UsageError("--duration goes with --follow")
    if args.batch or len(args.sources) != 1:
        raise UsageError("--follow follows one stream: give one SOURCE")
    if not args.output:
        raise UsageError("decrypt needs -o OUTPUT")
    fetcher = _fetcher(args)
    with _keys(args, fetcher) as keys:
        result = follow(args.sources[0], args.output, keys=keys, fetcher=fetcher, variant=args.variant,
                        key_id_param=args.key_id_param, duration=args.duration, jobs=args.jobs,
                        media_check=not args.no_media_check, resume=args.resume, force=args.force,
                        inputs=_inputs(args))
    log.info("%s", _followed(result))
    if result.gaps:
        say = log.warning if args.skip_missing else log.error
        say("%s missing from %s:", plural(result.missing, "segment"), result.output)
        for gap in result.gaps:
            say("  %s", gap)
        return 0 if args.skip_missing else SegmentError.exit_code
    return 0


def _followed(result: FollowResult) -> str:
    from .live import format_seconds

    where = "stdout" if result.output == "-" else result.output
    span = f" ({result.first_sequence}-{result.last_sequence})" if result.segments else ""
    earlier = f", after {plural(result.resumed_after, 'part')} of an earlier run" if result.resumed_after else ""
    return (f"stopped: {result.stopped}; wrote {plural(result.segments, 'segment')}{span}{earlier}, "
            f"{format_seconds(result.media_seconds)} of media, {_megabytes(result.bytes_written)}, "
            f"{plural(result.keys, 'key')} to {where}")


def _duration(text: str) -> float:
    from .live import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("duration ")) from None


class _Seconds(float):
    """--expect-rotation given as a time: a key period in seconds, not a count of segments."""


def _rotation(text: str) -> int | _Seconds:
    """``N`` (segments; seconds under --follow) or a time with its unit, ``60s``, ``2m`` (seconds)."""
    if text.strip().isdigit():
        return int(text)
    if not re.search(r"[hms]\s*$", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"{text!r}: want N segments or a time such as 60s or 2m")
    return _Seconds(_duration(text))


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

    sources = _verify_sources(args)
    reports = (("json", args.json), ("junit", args.junit), ("html", args.html))
    for option, target in reports:
        if target:
            check_folder(target, option)
            _refuse_report_over(target, FLAGS[option], [*sources, *_inputs(args),
                                                        *(t for o, t in reports if t and o != option)])
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
                found = _verify_one(args, source, keys, fetcher)
            except HlsDecryptError as exc:
                if len(sources) == 1:
                    raise
                log.error("%s: %s", source, _said(exc))
                errors.append((source, exc))
                continue
            for report in found:
                done.append(report)
                if not args.quiet or report.failed:
                    write_table(report, table, failures_only=args.quiet)
    several = len(done) > 1 or len(sources) > 1
    for target, write in ((args.json, write_json), (args.junit, write_junit), (args.html, write_html)):
        if target:
            write(done if several else done[0], target)
    failed = [f"{r.source} ({r.label})" if r.label else r.source for r in done if r.failed]
    if several:
        what = plural(len(done) + len(errors), "media playlist" if len(sources) == 1 else "report")
        say = log.error if failed or errors else log.info
        say("%s: %d passed, %d failed%s", what, len(done) - len(failed), len(failed) + len(errors),
            f" ({', '.join(failed + [s for s, _ in errors])})" if failed or errors else "")
    if failed:
        return VerificationFailed.exit_code
    return errors[0][1].exit_code if errors else 0


def _verify_one(args: argparse.Namespace, source: str, keys: KeyChain, fetcher: Fetcher) -> list[Report]:
    """A live channel watched; one media playlist (--variant, --reference); or every one of a master."""
    from .live import format_seconds
    from .verification import verify, verify_all, verify_live

    rotation = args.expect_rotation
    seconds = isinstance(rotation, _Seconds)
    if args.follow is not None:
        report = verify_live(source, args.follow, keys=keys, fetcher=fetcher, variant=args.variant or "best",
                             key_id_param=args.key_id_param, strict=args.strict, jobs=args.jobs,
                             expect_rotation_seconds=None if rotation is None else float(rotation),
                             key_within=args.key_within)
        assert report.follow is not None
        log.info("%s: %s (%s, %s)", source, report.follow["stopped"], plural(report.follow["reloads"], "reload"),
                 format_seconds(report.follow["watched"]))
        return [report]
    count = None if seconds else rotation
    period = float(rotation) if seconds else None
    if args.variant or args.reference:
        return [verify(source, keys=keys, fetcher=fetcher, variant=args.variant or "best",
                       key_id_param=args.key_id_param, reference=args.reference, strict=args.strict, jobs=args.jobs,
                       expect_rotation=count, expect_rotation_seconds=period)]
    return verify_all(source, keys=keys, fetcher=fetcher, key_id_param=args.key_id_param, strict=args.strict,
                      jobs=args.jobs, expect_rotation=count, expect_rotation_seconds=period)


def _verify_sources(args: argparse.Namespace) -> list[str]:
    if args.batch and args.sources:
        raise UsageError("give sources on the command line or with --batch, not both")
    sources = [row[0] for row in _batch_rows(args.batch, 1)] if args.batch else args.sources
    if not sources:
        raise UsageError("verify needs a SOURCE (or --batch FILE)")
    if args.reference and len(sources) > 1:
        raise UsageError("--reference is the clear recording of one stream: verify that stream alone")
    if args.follow is not None and (len(sources) > 1 or args.reference):
        raise UsageError("--follow watches one live channel, without --reference")
    if args.key_within is not None and args.follow is None:
        raise UsageError("--key-within goes with --follow")
    return sources


def _run_encrypt(args: argparse.Namespace) -> int:
    from .encryption import encrypt

    result = encrypt(args.source, args.output, fetcher=_fetcher(args), rotate=args.rotate, iv=args.iv,
                     key_uri=args.key_uri, keys_file=args.keys, variant=args.variant)
    log.info("wrote %s: %s under %s, keys in %s", result.playlist, plural(result.segments, "segment"),
             plural(result.keys, "key"), result.playlist.parent / "keys.json")
    return 0


def _run_completion(args: argparse.Namespace) -> int:
    from .completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return 0


def _run_man(args: argparse.Namespace) -> int:
    from .manpage import manpage

    sys.stdout.write(manpage(build_parser()))
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
    stop.interrupt()  # worker threads blocked on a server or a wait end now, not when it answers


def main(argv: Sequence[str] | None = None) -> int:
    global log
    argv = sys.argv[1:] if argv is None else list(argv)  # parsed twice when a config file sets defaults
    # the command asked for (the first word that names one, as argparse finds it) gets its options
    parser = build_parser(next((word for word in argv if word in COMMANDS), ""))
    args = parser.parse_args(argv)  # --version, --help and a mistyped option end here, having imported nothing
    import logging
    import signal

    from .config import config_path, load_config
    from .progress import LogHandler

    full = not hasattr(args, "run") or config_path()[0] is not None  # a file may set any command's options
    if full:
        parser = build_parser()
    try:
        config, config_error = load_config(parser), None
    except UsageError as exc:  # said once logging is set up
        config, config_error = None, exc
    if full:
        args = parser.parse_args(argv)  # again, over the defaults a file set: the command line wins
    log = logging.getLogger("hlsdecrypt")
    handler = LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hlsdecrypt: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if on_main_thread:  # SIGTERM cleans up as Ctrl-C does
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if config_error:
            raise config_error
        if args.verbose and args.quiet:
            raise UsageError("-v and -q ask for opposite things: give one")
        assert config is not None
        config.settle(args)
        log.debug("%s", config.describe())
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
    from .progress import end_line

    end_line(sys.stderr)

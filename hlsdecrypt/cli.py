"""The command line: a thin layer over the Python API, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

from . import __version__, stop
from .api import DEFAULT_ENDPOINT, DEFAULT_REGION, ApiKeySource, endpoint_from_env, region_for
from .credentials import find_credentials
from .crypto import DataKey
from .encrypt import DEFAULT_KEY_URI, IV_MODES, encrypt
from .errors import (EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, HlsDecryptError, SegmentError, UsageError,
                     VerificationFailed, plural)
from .fetch import DEADLINE, Fetcher
from .html_report import write_html
from .http import request_options
from .keys import KeyChain, KeyFile, KeySource, KeyUri, NoCredentials, StaticKey
from .keystore import KeyCache, write_keys
from .output import check_target
from .pipeline import HTTP_JOBS, decrypt_playlist, load_media_playlist
from .playlist import MediaPlaylist, is_url
from .progress import Progress
from .report import write_json, write_junit, write_table
from .retry import Backoff
from .verify import verify

log = logging.getLogger("hlsdecrypt")
SOURCE_HELP = "M3U8 playlist: a local path or an http(s) URL"


def _key_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("keys (asked in this order)")
    g.add_argument("--key", metavar="HEX", help="one AES-128 key (32 hex digits) for every encrypted segment")
    g.add_argument("--keys", metavar="FILE", help="JSON object: KeyID or key URI -> 32 hex digits")
    g.add_argument("--key-id-param", metavar="NAME",
                   help="query parameter of the key URI that holds the KeyID (default: key_id, KeyID, kid)")
    g.add_argument("--key-cache", metavar="FILE",
                   help="keep keys fetched by KeyID in FILE (created 0600) and reuse them on later runs")
    g.add_argument("--key-source", choices=("auto", "api", "uri", "none"), default="auto",
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


def _fetch_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("fetching")
    g.add_argument("--variant", default="best", help="master playlists: best, worst or an index from 0 (default best)")
    g.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="segments fetched and decrypted at once (default 6 over http(s), 1 for local files)")
    g.add_argument("--timeout", type=float, default=20.0, metavar="S", help="HTTP timeout in seconds (default 20)")
    g.add_argument("--deadline", type=float, default=DEADLINE, metavar="S",
                   help=f"most seconds one HTTP request may take, however steadily data comes (default {DEADLINE:g}; "
                        "playlists and keys: 3 x --timeout)")
    g.add_argument("--retries", type=int, default=3, metavar="N", help="HTTP retries on transient errors (default 3)")
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
    k = sub.add_parser("keys", parents=[common, _fetch_options(), _key_options()],
                       help="list a stream's keys (KeyIDs) and export them",
                       description="List the distinct keys of a stream with their segments; with --export, "
                                   "fetch them and write them as the JSON that --keys reads.")
    k.add_argument("source", help=SOURCE_HELP)
    k.add_argument("--export", metavar="FILE", help="fetch every key and write them to FILE (created 0600)")
    k.set_defaults(run=_run_keys)
    v = sub.add_parser("verify", parents=[common, _fetch_options(), _key_options()],
                       help="check, with evidence, that a stream is encrypted as it should be",
                       description="Check a stream's encryption: coverage, ciphertext, decryption, keys, IVs, "
                                   "and optionally a clear reference. Exit 0 when no check fails, 6 when any does.")
    v.add_argument("source", help=SOURCE_HELP)
    v.add_argument("--reference", metavar="CLEAR",
                   help="a clear recording that the decrypted stream must equal byte for byte")
    v.add_argument("--expect-rotation", type=int, metavar="N", help="require a new key at least every N segments")
    v.add_argument("--strict", action="store_true", help="reused IVs and plain-http key URIs fail instead of warn")
    v.add_argument("--json", metavar="FILE", help="write the report as JSON (schema in the README); - for stdout")
    v.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML, one test case per check; "
                                                   "- for stdout")
    v.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page with a "
                                                  "timeline of the stream; - for stdout")
    v.set_defaults(run=_run_verify)
    e = sub.add_parser("encrypt", parents=[common, _fetch_options()],
                       help="encrypt a clear stream (to build test streams)",
                       description="AES-128 encrypt a clear HLS stream into OUTDIR, with keys.json beside it.")
    e.add_argument("source", help="clear M3U8 playlist: a local path or an http(s) URL")
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


def make_fetcher(args: argparse.Namespace) -> Fetcher:
    if (args.jobs is not None and args.jobs < 1) or args.retries < 0 or args.timeout <= 0 or args.deadline <= 0:
        raise UsageError("--jobs must be at least 1, --retries at least 0, --timeout and --deadline positive")
    options = request_options(headers=args.header, user_agent=args.user_agent, cookies=args.cookies,
                              proxy=args.proxy, ca_bundle=args.ca_bundle)
    return Fetcher(timeout=args.timeout, deadline=args.deadline, backoff=Backoff(attempts=args.retries + 1),
                   allow_any_path=args.allow_any_path, request_options=options,
                   append_url_params=args.append_url_params,
                   pool_size=max(args.jobs or 0, HTTP_JOBS) + 2)  # the key thread fetches too


def make_key_chain(args: argparse.Namespace, fetcher: Fetcher, *, stop_after_failure: bool = True) -> KeyChain:
    sources: list[KeySource] = []
    if args.key:
        try:
            sources.append(StaticKey(DataKey.from_hex(args.key)))
        except ValueError:
            raise UsageError("--key wants 32 hex digits") from None
    if args.keys:
        sources.append(KeyFile(args.keys))
    cache = KeyCache(args.key_cache) if args.key_cache else None
    if cache:
        sources.append(cache)
    credentials = find_credentials(args.credentials) if args.key_source in ("auto", "api") else None
    if args.key_source == "api" and credentials is None:
        raise UsageError("--key-source api needs access keys: set VOLC_ACCESSKEY and VOLC_SECRETKEY, "
                         "or use --credentials FILE")
    if credentials:
        if args.api_rate <= 0:
            raise UsageError("--api-rate must be positive")
        endpoint = (args.api_endpoint or endpoint_from_env()).rstrip("/")
        if not is_url(endpoint) or "[" in endpoint:
            raise UsageError(f"--api-endpoint {endpoint}: want an http(s) URL such as {DEFAULT_ENDPOINT}")
        sources.append(ApiKeySource(credentials, endpoint=endpoint, region=args.region or region_for(endpoint),
                                    rate=args.api_rate, timeout=args.timeout))
    elif args.key_source == "auto":
        sources.append(NoCredentials())  # so that a KeyID's failure says why the API was not asked
    if args.key_source in ("auto", "uri"):
        sources.append(KeyUri(fetcher))
    chain = KeyChain(sources, cache=cache, stop_after_failure=stop_after_failure)
    log.debug("key sources, in order: %s", ", ".join(_describe(s) for s in chain.sources) or "none")
    return chain


def _describe(source: KeySource) -> str:
    if isinstance(source, ApiKeySource):
        return f"{source.name} at {source.endpoint} ({source.region}, {source.credentials.origin})"
    return source.name


def _run_decrypt(args: argparse.Namespace) -> int:
    jobs = _decrypt_jobs(args)
    fetcher = make_fetcher(args)
    keys = make_key_chain(args, fetcher, stop_after_failure=len(jobs) == 1)
    try:
        if len(jobs) == 1 and not args.batch:
            return _decrypt_one(args, jobs[0], keys, fetcher)
        return _decrypt_batch(args, jobs, keys, fetcher)
    finally:
        keys.close()


@dataclass(frozen=True)
class _Job:
    """One stream to decrypt: into ``output``, or into ``folder`` under a name made from its source."""

    source: str
    output: str | None
    folder: str | None = None

    def target(self, playlist: MediaPlaylist) -> str:
        return self.output or os.path.join(self.folder or ".", _output_name(self.source, playlist))


def _decrypt_jobs(args: argparse.Namespace) -> list[_Job]:
    """The streams and where each goes, checked before any work: no two streams may share an
    output, and no output may be an input."""
    if args.resume and args.output == "-":
        raise UsageError("--resume needs an output file, not stdout")
    if args.batch:
        if args.sources:
            raise UsageError("give sources on the command line or with --batch, not both")
        if args.output:
            raise UsageError("--batch names each output itself; -o has no meaning with it")
        jobs = [_Job(source, output) for source, output in _batch_rows(args.batch)]
    elif not args.sources:
        raise UsageError("decrypt needs a SOURCE (or --batch FILE)")
    elif not args.output:
        raise UsageError("decrypt needs -o OUTPUT")
    elif len(args.sources) == 1 and not os.path.isdir(args.output):
        jobs = [_Job(args.sources[0], args.output)]
    elif os.path.isdir(args.output):
        jobs = [_Job(source, None, args.output) for source in args.sources]
    else:
        raise UsageError(f"-o {args.output}: with several sources, -o names an existing folder")
    _refuse_shared_outputs(jobs)
    return jobs


def _batch_rows(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            rows = [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--batch {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    bad = next((n for n, row in enumerate(rows, 1) if len(row) != 2), None)
    if bad:
        raise UsageError(f"--batch {path}: entry {bad} is not 'SOURCE OUTPUT'")
    return [(source, output) for source, output in rows]


def _refuse_shared_outputs(jobs: list[_Job]) -> None:
    """``a/rec/index.m3u8`` and ``b/rec/index.m3u8`` would both become ``rec.ts``: say so now."""
    seen: dict[str, str] = {}
    for job in jobs:
        name = (os.path.realpath(job.output) if job.output
                else os.path.join(os.path.realpath(job.folder or "."), _output_stem(job.source)))
        if name in seen and job.output != "-":
            raise UsageError(f"{seen[name]} and {job.source} would both be written to "
                             f"{job.output or os.path.join(job.folder or '.', _output_stem(job.source)) + '.*'}; "
                             "name each output with --batch FILE ('SOURCE OUTPUT' per line)")
        seen[name] = job.source


def _inputs(args: argparse.Namespace) -> list[str]:
    """Files of this run that no output may replace (the playlists and segments are added later)."""
    return [path for path in (args.keys, args.key_cache, args.credentials, args.batch) if path]


def _decrypt_one(args: argparse.Namespace, job: _Job, keys: KeyChain, fetcher: Fetcher) -> int:
    if job.output and job.output != "-":
        check_target(job.output, force=args.force, inputs=[job.source, *_inputs(args)])  # before any work
    playlist, chosen = load_media_playlist(job.source, fetcher, variant=args.variant, key_id_param=args.key_id_param)
    output = job.target(playlist)
    result = decrypt_playlist(playlist, output, keys, fetcher, variant=chosen, jobs=args.jobs,
                              media_check=not args.no_media_check, resume=args.resume,
                              skip_missing=args.skip_missing, force=args.force,
                              inputs=[job.source, *_inputs(args)],
                              progress=Progress() if sys.stderr.isatty() and not args.quiet else None)
    where = "stdout" if output == "-" else output
    skipped = f" (skipped {plural(result.gap_segments, 'EXT-X-GAP segment')})" if result.gap_segments else ""
    log.info("wrote %s%s, %s, %s to %s", plural(result.segments - len(result.gaps) - result.gap_segments, "segment"),
             skipped, _megabytes(result.bytes_written), plural(len(keys.resolved), "key"), where)
    if result.gaps:
        log.error("error: %d of %s are missing from %s:", len(result.gaps), plural(result.segments, "segment"), where)
        for gap in result.gaps:
            log.error("  %s", gap)
        return SegmentError.exit_code
    return 0


def _decrypt_batch(args: argparse.Namespace, jobs: list[_Job], keys: KeyChain, fetcher: Fetcher) -> int:
    """Each stream in turn, with one key chain (so one cache and one rate limit); a failure
    is reported and the others go on; an output that exists already is skipped (unless
    ``--force``), so that running a batch again finishes only what is missing.
    Exit: 0, or the code of the first failure."""
    failures: list[tuple[str, int]] = []
    skipped = 0
    total = len(jobs)
    for n, job in enumerate(jobs, 1):
        keys.next_stream()
        try:
            if job.output and os.path.isfile(job.output) and not args.force:
                log.info("[%d/%d] skipped %s: %s exists", n, total, job.source, job.output)
                skipped += 1
                continue
            playlist, chosen = load_media_playlist(job.source, fetcher, variant=args.variant,
                                                   key_id_param=args.key_id_param)
            output = job.target(playlist)
            if os.path.isfile(output) and not args.force:
                log.info("[%d/%d] skipped %s: %s exists", n, total, job.source, output)
                skipped += 1
                continue
            result = decrypt_playlist(playlist, output, keys, fetcher, variant=chosen, jobs=args.jobs,
                                      media_check=not args.no_media_check, resume=args.resume,
                                      skip_missing=args.skip_missing, force=args.force,
                                      inputs=[job.source, *_inputs(args)])
        except HlsDecryptError as exc:
            log.error("[%d/%d] FAILED %s: %s", n, total, job.source, exc)
            failures.append((job.source, exc.exit_code))
            continue
        if result.gaps:
            log.error("[%d/%d] FAILED %s: %d of %s missing: %s", n, total, job.source, len(result.gaps),
                      plural(result.segments, "segment"), "; ".join(result.gaps))
            failures.append((job.source, SegmentError.exit_code))
            continue
        log.info("[%d/%d] ok %s -> %s (%s, %s)", n, total, job.source, output, plural(result.segments, "segment"),
                 _megabytes(result.bytes_written))
    done = total - len(failures) - skipped
    log.log(logging.ERROR if failures else logging.INFO, "%d of %s decrypted%s%s", done, plural(total, "stream"),
            f", {skipped} skipped (output exists)" if skipped else "",
            f"; failed: {', '.join(s for s, _ in failures)}" if failures else "")
    return failures[0][1] if failures else 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _output_stem(source: str) -> str:
    """``rec1/index.m3u8`` -> ``rec1``: a playlist's name, or its folder's when the name says nothing."""
    path = urlsplit(source).path if is_url(source) else source
    stem = posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]
    if stem in ("index", "playlist", "prog_index", "master", "") and posixpath.dirname(path):
        stem = posixpath.basename(posixpath.dirname(path)) or stem
    return stem or "stream"


def _output_name(source: str, playlist: MediaPlaylist) -> str:
    """``rec1/index.m3u8`` -> ``rec1.ts`` (``.mp4`` for fMP4)."""
    return f"{_output_stem(source)}{'.mp4' if any(p.is_init for p in playlist.parts) else '.ts'}"


def _run_keys(args: argparse.Namespace) -> int:
    check_writable(args.export, "--export")
    fetcher = make_fetcher(args)
    playlist, _ = load_media_playlist(args.source, fetcher, variant=args.variant, key_id_param=args.key_id_param)
    rows = []
    for ref in playlist.keys:
        users = [p for p in playlist.parts if p.key and p.key.identity == ref.identity]
        kind = "KeyID" if ref.key_id else "inline" if ref.inline else "key URI"
        rows.append((ref.key_id or ref.shown_uri, kind, len(users), ref.line))
    clear = sum(1 for p in playlist.parts if p.key is None)
    out = sys.stdout
    width = max([len(r[0]) for r in rows] + [3])
    out.write(f"{'KEY':<{width}}  {'KIND':<7}  {'PARTS':>5}  FIRST LINE\n")
    for name, kind, count, line in rows:
        out.write(f"{name:<{width}}  {kind:<7}  {count:>5}  {line}\n")
    out.write(f"{len(rows)} keys, {len(playlist.parts) - clear} encrypted parts, {clear} clear\n")
    if args.export:
        keys = make_key_chain(args, fetcher)
        try:
            keys.prefetch(playlist.parts)
            exported = {ref.key_id or ref.uri: keys.get(ref) for ref in playlist.keys}
        finally:
            keys.close()
        write_keys(args.export, exported)
        log.info("exported %d keys to %s", len(exported), args.export)
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    reports = (("--json", args.json), ("--junit", args.junit), ("--html", args.html))
    for option, target in reports:
        check_writable(target, option)
    to_stdout = [option for option, target in reports if target == "-"]
    if len(to_stdout) > 1:
        raise UsageError(f"only one report can go to stdout, not {' and '.join(to_stdout)}")
    fetcher = make_fetcher(args)
    keys = make_key_chain(args, fetcher, stop_after_failure=False)
    try:
        report = verify(args.source, keys, fetcher, variant=args.variant, key_id_param=args.key_id_param,
                        reference=args.reference, expect_rotation=args.expect_rotation, strict=args.strict,
                        jobs=args.jobs)
    finally:
        keys.close()
    if not args.quiet:
        write_table(report, sys.stderr if to_stdout else sys.stdout)  # stdout carries the report asked for
    if args.json:
        write_json(report, args.json)
    if args.junit:
        write_junit(report, args.junit)
    if args.html:
        write_html(report, args.html)
    return VerificationFailed.exit_code if report.failed else 0


def _run_encrypt(args: argparse.Namespace) -> int:
    given = KeyFile(args.keys).keys if args.keys else None
    result = encrypt(args.source, args.output, fetcher=make_fetcher(args), rotate=args.rotate, iv_mode=args.iv,
                     key_uri=args.key_uri, given_keys=given, variant=args.variant)
    log.info("wrote %s: %d segments under %d keys, keys in %s", result.playlist, result.segments, result.keys,
             result.playlist.parent / "keys.json")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    stop.request_stop()  # worker threads blocked on a server or a wait end now, not when it answers
    raise KeyboardInterrupt


def check_writable(path: str | None, what: str) -> None:
    """A report or key file is written after the work: its folder is checked before it."""
    if path and path != "-":
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UsageError(f"{what} {path}: no such folder {folder}")
        if os.path.isdir(path):
            raise UsageError(f"{what} {path}: is a folder")


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
        return args.run(args)
    except HlsDecryptError as exc:
        log.error("error: %s", exc)
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


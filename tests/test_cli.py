"""The command line people expect: progress on a terminal and in a log, a config file, shell
completion and a man page, a JSON summary for scripts, and no binary on a terminal."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from hlsdecrypt.cli import build_parser, main
from hlsdecrypt.completion import describe
from hlsdecrypt.config import Config, load_config
from hlsdecrypt.errors import UsageError
from hlsdecrypt.keys import KeyProgress
from hlsdecrypt.progress import LogHandler, Progress, end_line

from conftest import FIXTURES, MANIFEST, sha256
from fake_volc import AK, SK, FakeLiveApi

ROOT = Path(__file__).resolve().parent.parent
LIVE = "live_rotation/index.m3u8"
LIVE_KEYS = json.loads((FIXTURES / "live_rotation/keys.json").read_text())
IMPLICIT = "implicit_iv/index.m3u8"
CLEAR_SHA = MANIFEST[0]["sha256"]  # every 6-segment TS fixture decrypts to the same clear stream
LOW_SHA = next(m["sha256"] for m in MANIFEST if m["args"] == ["--variant", "worst"])
HIGH_SHA = next(m["sha256"] for m in MANIFEST if m["playlist"] == "master/index.m3u8" and not m["args"])
SUMMARY_SCHEMA = json.loads((ROOT / "hlsdecrypt/decrypt-summary.schema.json").read_text())
DRAW = "\r\x1b[2K"


# -- the progress line, with a clock of our own -------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _display(clock: Clock, **kwargs) -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    return Progress(stream, clock=clock, ticker=False, **kwargs), stream


def test_the_line_shows_percent_parts_sizes_rate_elapsed_and_eta():
    clock = Clock()
    progress, stream = _display(clock, tty=True)
    progress.status("fetching playlist…")
    assert stream.getvalue() == DRAW + "fetching playlist…  0:00 elapsed"  # at once, before any part
    progress.start(100, sizes=[3_000_000] * 100)
    for _ in range(40):
        clock.now += 1
        progress.advance(3_000_000)
    assert progress.line() == "40% 40/100 parts  120/300 MB  3.0 MB/s  0:40 elapsed  ETA 1:00"
    progress.finish()
    assert stream.getvalue().endswith(DRAW + "40% 40/100 parts  120/300 MB  3.0 MB/s  0:40 elapsed  ETA 1:00\n")


def test_sizes_not_known_in_advance_are_estimated_and_marked_with_a_tilde():
    clock = Clock()
    progress, _ = _display(clock, tty=True)
    progress.start(10)  # http(s): no sizes until fetched
    assert progress.line() == "0% 0/10 parts  0.00 MB  0:00 elapsed"
    for _ in range(2):
        clock.now += 1
        progress.advance(3_000_000)
    assert progress.line() == "20% 2/10 parts  6.0/~30.0 MB  3.0 MB/s  0:02 elapsed  ETA 0:08"


def test_after_resume_all_parts_count_and_the_rate_is_this_runs():
    clock = Clock()
    progress, _ = _display(clock, tty=True)
    progress.start(98, done=18, done_bytes=54_000_000, sizes=[3_000_000] * 80)
    assert progress.line() == "18% 18/98 parts  54/294 MB  0:00 elapsed"
    clock.now += 1
    progress.advance(3_000_000)
    assert progress.line() == "19% 19/98 parts  57/294 MB  3.0 MB/s  0:01 elapsed  ETA 1:19"


def test_keys_still_to_come_from_the_api_are_counted_and_bound_the_eta():
    clock = Clock()
    progress, _ = _display(clock, tty=True, keys=lambda: KeyProgress(2, 12, "API: 1 request/s", 1.0))
    progress.start(10, sizes=[1_000_000] * 10)
    assert progress.line() == ("0% 0/10 parts  0.0/10.0 MB  0:00 elapsed  ETA 0:10  "
                               "waiting for key 3 of 12 (API: 1 request/s)")
    clock.now += 1
    progress.advance(1_000_000)  # 9 s of bytes left at this rate, but 10 keys at 1 request/s
    assert progress.line().endswith("ETA 0:10  key 3 of 12 (API: 1 request/s)")


def test_a_slow_link_is_shown_in_kilobytes_a_second():
    clock = Clock()
    progress, _ = _display(clock, tty=True)
    progress.start(4, sizes=[500_000] * 4)
    clock.now += 5
    progress.advance(500_000)
    assert progress.line() == "25% 1/4 parts  0.50/2.00 MB  100 kB/s  0:05 elapsed  ETA 0:15"


def test_keys_all_resolved_say_nothing_of_keys():
    progress, _ = _display(Clock(), tty=True, keys=lambda: KeyProgress(12, 12))
    progress.start(10, sizes=[1_000_000] * 10)
    assert "key" not in progress.line()


def test_in_a_log_a_short_run_prints_no_progress_at_all():
    clock = Clock()
    progress, stream = _display(clock, tty=False, every=10)
    progress.status("fetching playlist…")
    progress.start(100, sizes=[1_000_000] * 100)
    for _ in range(100):
        clock.now += 0.01
        progress.advance(1_000_000)
    progress.finish()
    assert stream.getvalue() == ""


def test_in_a_log_a_long_run_prints_a_plain_line_every_few_seconds_and_at_the_end():
    clock = Clock()
    progress, stream = _display(clock, tty=False, every=10)
    progress.start(100, sizes=[1_000_000] * 100)
    for _ in range(25):
        clock.now += 1
        progress.advance(1_000_000)
    clock.now += 10
    progress.tick()  # nothing moved for 10 s: a line all the same, so that the log shows life
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == ["hlsdecrypt: 10% 10/100 parts", "hlsdecrypt: 20% 20/100 parts",
                                                       "hlsdecrypt: 25% 25/100 parts", "hlsdecrypt: 25% 25/100 parts"]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_in_a_log_a_fast_stream_prints_at_each_tenth_not_more():
    clock = Clock()
    progress, stream = _display(clock, tty=False, every=10)
    progress.start(100, sizes=[1_000_000] * 100)
    for _ in range(100):
        clock.now += 0.5  # 10 % every 5 s: more often than every 10 s, less than every 2 s
        progress.advance(1_000_000)
    percents = [int(line.split("%")[0].split()[-1]) for line in stream.getvalue().splitlines()]
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def test_a_log_record_wipes_the_line_and_ctrl_c_ends_it_once():
    progress, stream = _display(Clock(), tty=True)
    progress.status("fetching playlist…")
    handler = LogHandler(stream)
    handler.setFormatter(logging.Formatter("hlsdecrypt: %(message)s"))
    handler.emit(logging.makeLogRecord({"msg": "retrying"}))
    assert stream.getvalue().endswith("elapsed" + DRAW + "hlsdecrypt: retrying\n")
    progress.tick()
    end_line(stream)
    end_line(stream)
    assert stream.getvalue().endswith("elapsed\n") and not stream.getvalue().endswith("\n\n")
    progress.finish()


def test_a_transient_line_leaves_nothing_behind():
    progress, stream = _display(Clock(), tty=True, transient=True, label="[2/3] ")
    progress.start(2, sizes=[10, 10])
    assert stream.getvalue().startswith(DRAW + "[2/3] 0% 0/2 parts")
    progress.advance(10)
    progress.finish()
    assert stream.getvalue().endswith(DRAW) and "\n" not in stream.getvalue()


# -- the progress line on a real terminal --------------------------------------------------

class Terminal:
    """The CLI in a subprocess whose stderr (and stdout, unless piped) is a pseudo-terminal, 200 columns wide."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, stdout_tty: bool = True):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "hlsdecrypt", *argv], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stderr=slave,
                                     stdout=slave if stdout_tty else subprocess.DEVNULL)
        os.close(slave)
        self.seen = b""

    @property
    def text(self) -> str:
        return self.seen.decode("utf-8", "replace")

    def frames(self) -> list[str]:
        """Each state of the progress line as drawn, in order."""
        return [frame.split("\r\n")[0] for frame in self.text.split(DRAW)[1:]]

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout  # against a hang, not a measure of speed
        while text not in self.text:
            if not self._read(deadline):
                raise AssertionError(f"{text!r} never shown; the terminal shows {self.text!r}")

    def close(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        code = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def _read(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            self.proc.kill()
            return False
        ready, _, _ = select.select([self.master], [], [], left)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every end of the terminal's other side is closed
            return False
        self.seen += chunk
        return bool(chunk)


@pytest.fixture
def term_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "HOME": str(home), "HLSDECRYPT_CONFIG": "", "TERM": "xterm"}


def test_on_a_terminal_the_first_line_comes_at_once_and_the_last_stays(fixtures, tmp_path, term_env):
    out = tmp_path / "out.ts"
    terminal = Terminal(["decrypt", LIVE, "--keys", "live_rotation/keys.json", "-o", str(out)], env=term_env,
                        cwd=fixtures)
    assert terminal.close() == 0, terminal.text
    frames = terminal.frames()
    assert frames[0].startswith("fetching playlist…")
    assert re.fullmatch(r"100% 6/6 parts  (0\.\d\d)/\1 MB  [\d.,]+ [kM]B/s  0:0\d elapsed", frames[-1]), frames
    assert re.search(r"elapsed\r\nhlsdecrypt: wrote 6 segments, 0\.1 MB, 3 keys to ", terminal.text)
    assert sha256(out) == CLEAR_SHA


class GatedApi(FakeLiveApi):
    """The fake key API, answering only as the test lets it: the display can be read while it waits."""

    def __init__(self, keys: dict[str, str], **kwargs):
        self.gate = threading.Semaphore(0)
        super().__init__(keys, **kwargs)

    def _handler(self):
        handler, api = super()._handler(), self

        class Gated(handler):
            def do_GET(self) -> None:
                api.gate.acquire(timeout=60)
                super().do_GET()

        return Gated

    def __exit__(self, *exc: object) -> None:
        self.gate.release(100)
        super().__exit__(*exc)


def test_on_a_terminal_keys_from_the_api_are_counted_while_they_come(fixtures, tmp_path, term_env):
    out = tmp_path / "out.ts"
    with GatedApi(LIVE_KEYS, rate=50) as api:
        env = {**term_env, "VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK, "HLSDECRYPT_API_ENDPOINT": api.url}
        terminal = Terminal(["decrypt", LIVE, "--key-source", "api", "--api-rate", "50", "-o", str(out)], env=env,
                            cwd=fixtures)
        terminal.expect("0/6 parts")
        terminal.expect("waiting for key 1 of 3 (API: 50 requests/s)")
        api.gate.release()
        terminal.expect("key 2 of 3 (API: 50 requests/s)")
        api.gate.release(2)
        assert terminal.close() == 0, terminal.text
    assert sha256(out) == CLEAR_SHA
    assert terminal.frames()[-1].startswith("100% 6/6 parts")
    assert not any(value in terminal.text for value in LIVE_KEYS.values())


def test_on_a_terminal_a_resumed_run_counts_every_part(run, fixtures, tmp_path, term_env):
    out = tmp_path / "out.ts"
    (fixtures / "implicit_iv/seg3.ts").unlink()
    code, _ = run("decrypt", fixtures / IMPLICIT, "-o", out, "--resume")
    assert code == 5 and json.loads((tmp_path / ".out.ts.part.json").read_text())["parts"] == 3
    shutil.copy(FIXTURES / "implicit_iv/seg3.ts", fixtures / "implicit_iv/seg3.ts")
    terminal = Terminal(["decrypt", str(fixtures / IMPLICIT), "-o", str(out), "--resume"], env=term_env, cwd=tmp_path)
    assert terminal.close() == 0, terminal.text
    drawn = [re.match(r"\d+% (\d+/\d+ parts)", frame) for frame in terminal.frames()]
    counts = [match.group(1) for match in drawn if match]
    assert counts[0] == "3/6 parts" and counts[-1] == "6/6 parts", counts
    assert "hlsdecrypt: resuming after 3 of 6 parts" in terminal.text
    assert sha256(out) == CLEAR_SHA


def test_in_a_log_a_short_run_says_only_what_it_wrote(run, tmp_path):
    code, err = run("decrypt", FIXTURES / IMPLICIT, "-o", tmp_path / "out.ts")
    assert code == 0
    assert err == f"hlsdecrypt: wrote 6 segments, 0.1 MB, 1 key to {tmp_path / 'out.ts'}\n"


# -- no binary on a terminal ----------------------------------------------------------------

def test_stdout_on_a_terminal_is_refused_for_the_clear_stream(fixtures, term_env):
    terminal = Terminal(["decrypt", IMPLICIT, "-o", "-"], env=term_env, cwd=fixtures)
    assert terminal.close() == 7
    assert "hlsdecrypt: error: -o -: stdout is a terminal" in terminal.text and "--force" in terminal.text
    assert "\x47" * 3 not in terminal.text and len(terminal.seen) < 1000  # no MPEG-TS went to the terminal


def test_stdout_on_a_terminal_takes_the_stream_with_force(fixtures, term_env):
    terminal = Terminal(["decrypt", IMPLICIT, "-o", "-", "--force", "-q"], env=term_env, cwd=fixtures)
    assert terminal.close() == 0
    assert terminal.seen.count(b"\x47") >= 100_000 // 188  # sync bytes of the clear stream's packets


def test_stdout_that_is_a_pipe_is_never_refused(tmp_path, term_env):
    done = subprocess.run([sys.executable, "-m", "hlsdecrypt", "decrypt", str(FIXTURES / IMPLICIT), "-o", "-"],
                          capture_output=True, env=term_env)
    assert done.returncode == 0, done.stderr
    (tmp_path / "piped.ts").write_bytes(done.stdout)
    assert sha256(tmp_path / "piped.ts") == CLEAR_SHA


# -- the config file ------------------------------------------------------------------------

def _config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"HLSDECRYPT_CONFIG": str(path)}


def test_config_sets_defaults_per_command_and_the_command_line_wins(tmp_path):
    parser = build_parser()
    load_config(parser, _config(tmp_path, 'jobs = 3\napi-rate = 2.5\ntimeout = 10\nkey_cache = "keys.json"\n'
                                          '[verify]\ntimeout = 30\nstrict = true\n'))
    decrypt = parser.parse_args(["decrypt", "x", "-o", "y"])
    assert (decrypt.jobs, decrypt.api_rate, decrypt.timeout) == (3, 2.5, 10.0)
    assert decrypt.key_cache == str(tmp_path / "keys.json")  # relative to the config file's folder
    verify = parser.parse_args(["verify", "x"])
    assert (verify.timeout, verify.strict, verify.jobs) == (30.0, True, 3)
    given = parser.parse_args(["decrypt", "x", "-o", "y", "--jobs", "5", "--timeout", "2"])
    assert (given.jobs, given.timeout) == (5, 2.0)


def test_config_file_is_found_under_xdg_config_home_and_can_be_turned_off(tmp_path):
    folder = tmp_path / "xdg/hlsdecrypt"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text('variant = "worst"\n')
    parser = build_parser()
    config = load_config(parser, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert config.path == str(folder / "config.toml")
    assert parser.parse_args(["keys", "x"]).variant == "worst"
    off = load_config(build_parser(), {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HLSDECRYPT_CONFIG": ""})
    assert off.path is None and "empty" in off.describe()
    with pytest.raises(UsageError, match="HLSDECRYPT_CONFIG names .*nowhere.toml: no such file"):
        load_config(build_parser(), {"HLSDECRYPT_CONFIG": str(tmp_path / "nowhere.toml")})


def test_config_applies_to_a_run_and_v_says_which_file(run, fixtures, tmp_path, monkeypatch):
    env = _config(tmp_path, 'variant = "worst"\n')
    monkeypatch.setenv("HLSDECRYPT_CONFIG", env["HLSDECRYPT_CONFIG"])
    code, err = run("decrypt", fixtures / "master/index.m3u8", "-o", tmp_path / "low.ts", "-v")
    assert code == 0, err
    assert f"config file {tmp_path / 'config.toml'}: variant" in err
    assert sha256(tmp_path / "low.ts") == LOW_SHA
    code, err = run("decrypt", fixtures / "master/index.m3u8", "-o", tmp_path / "high.ts", "--variant", "best")
    assert code == 0 and sha256(tmp_path / "high.ts") == HIGH_SHA


def test_a_run_builds_only_its_commands_options_but_a_config_file_is_checked_against_all(run, fixtures, tmp_path,
                                                                                          monkeypatch):
    """A run parses its arguments with only its command's options built (the others are one line of
    help); a config file may set any command's options, so it is checked against all of them."""
    assert "--strict" not in build_parser("decrypt").format_help()  # the top level, as --help shows it
    verify_options = [a for a in build_parser("decrypt")._subparsers._group_actions[0].choices["verify"]._actions]
    assert len(verify_options) == 1  # -h alone: verify was not built
    env = _config(tmp_path, "[verify]\nstrict = true\n[decrypt]\njobs = 2\n")
    monkeypatch.setenv("HLSDECRYPT_CONFIG", env["HLSDECRYPT_CONFIG"])
    code, err = run("decrypt", fixtures / "implicit_iv/index.m3u8", "-o", tmp_path / "out.ts", "-v")
    assert code == 0, err
    assert "strict" in err and "jobs" in err  # -v names what the file set
    assert sha256(tmp_path / "out.ts") == sha256(fixtures / "implicit_iv/clear.ts")


@pytest.mark.parametrize("text, said", [
    ("colour = 3\n", r"config.toml: colour: unknown key \(a config file may set: .*api-rate"),
    ("sk = 'abc'\n", "config.toml: sk: credentials never live in the config file"),
    ("[decrypt]\nsecret_access_key = 'abc'\n", r"config.toml: \[decrypt\] secret_access_key: credentials never"),
    ("key = '00112233445566778899aabbccddeeff'\n", "config.toml: key: credentials never live"),
    ("output = 'x.ts'\n", "config.toml: output: --output belongs on the command line"),
    ("force = true\n", "config.toml: force: --force belongs on the command line"),
    ("[encrypt]\nstrict = true\n", r"config.toml: \[encrypt\] strict: encrypt has no option --strict"),
    ("[play]\njobs = 2\n", r"config.toml: \[play\]: no such command"),
    ("jobs = 'many'\n", "config.toml: jobs: want a whole number"),
    ("key-source = 'magic'\n", "config.toml: key-source: want one of auto, api, uri, none"),
    ("key-store = 'redis://:hunter2@redis.internal/0'\n", "config.toml: key-store: the URL holds credentials"),
    ("jobs = \n", "config.toml: not valid TOML"),
])
def test_config_mistakes_are_usage_errors_naming_the_file_and_key(run, tmp_path, monkeypatch, text, said):
    monkeypatch.setenv("HLSDECRYPT_CONFIG", _config(tmp_path, text)["HLSDECRYPT_CONFIG"])
    code, err = run("decrypt", FIXTURES / IMPLICIT, "-o", tmp_path / "out.ts")
    assert code == 2
    assert re.search(said, err), err
    assert "hunter2" not in err and "00112233445566778899aabbccddeeff" not in err
    assert not (tmp_path / "out.ts").exists()


def test_help_still_works_with_a_broken_config_file(tmp_path, term_env):
    env = {**term_env, **_config(tmp_path, "colour = 3\n")}
    done = subprocess.run([sys.executable, "-m", "hlsdecrypt", "decrypt", "--help"], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0 and "--json-summary" in done.stdout


def test_repeatable_options_from_the_config_come_first_and_a_name_given_again_replaces_them():
    """As --header will be: the file's headers are sent, the command line's added, one name once."""
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("decrypt").add_argument("--header", action="append", default=[])
    config = Config("config.toml", "", lists={"decrypt": {"header": ["Referer: https://a/", "Origin: https://a"]}})
    args = parser.parse_args(["decrypt", "--header", "referer: https://b/", "--header", "X-Trace: 1"])
    config.settle(args)
    assert args.header == ["Origin: https://a", "referer: https://b/", "X-Trace: 1"]


def test_a_secret_header_in_the_config_is_refused():
    import argparse

    from hlsdecrypt.config import _value

    action = argparse._AppendAction(["--header"], "header", default=[])
    with pytest.raises(UsageError, match="config.toml: header: the Authorization header is a credential"):
        _value("config.toml: header", "header", action, ["Authorization: Bearer s3cret"], "/")


# -- completion and the man page ------------------------------------------------------------

def _script(shell: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hlsdecrypt", "completion", shell], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def _bash_complete(*words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being typed), with the script loaded as the README says."""
    line = " ".join(f"'{w}'" for w in words)
    program = (f'source <("{sys.executable}" -m hlsdecrypt completion bash) && complete -p hlsdecrypt && '
               f"COMP_WORDS=({line}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && _hlsdecrypt && "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, cwd=FIXTURES,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "complete -F _hlsdecrypt hlsdecrypt"
    return [line for line in lines[1:] if line]


def test_bash_completes_commands_options_choices_and_files():
    assert _bash_complete("hlsdecrypt", "de") == ["decrypt"]
    assert _bash_complete("hlsdecrypt", "-v", "ve") == ["verify"]
    assert _bash_complete("hlsdecrypt", "decrypt", "--json-s") == ["--json-summary"]
    assert sorted(_bash_complete("hlsdecrypt", "decrypt", "--key-source", "")) == ["api", "auto", "none", "uri"]
    assert _bash_complete("hlsdecrypt", "decrypt", "--key-source", "=", "n") == ["none"]
    assert _bash_complete("hlsdecrypt", "completion", "f") == ["fish"]
    assert _bash_complete("hlsdecrypt", "decrypt", "live_rot") == ["live_rotation"]
    assert _bash_complete("hlsdecrypt", "decrypt", "--jobs", "") == []


def test_every_command_and_option_of_the_parser_is_in_every_script():
    top, commands = describe(build_parser())
    scripts = {shell: _script(shell) for shell in ("bash", "zsh", "fish")}
    for command in commands:
        for option in command.options:
            for flag in option.flags:
                assert flag in scripts["bash"] and flag in scripts["zsh"], flag
                assert (f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}") in scripts["fish"]
    assert {c.name for c in commands} == {"decrypt", "keys", "verify", "encrypt", "completion", "man"}


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_zsh_loads_the_script_after_compinit(tmp_path):
    path = tmp_path / "_hlsdecrypt"
    path.write_text(_script("zsh"))
    done = subprocess.run(["zsh", "-fc", f"autoload -U compinit && compinit -u -d {tmp_path}/zcompdump && "
                                         f"source {path} && print -r -- $_comps[hlsdecrypt]"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "_hlsdecrypt", done.stderr


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_fish_completes_commands_and_choices(tmp_path):
    path = tmp_path / "hlsdecrypt.fish"
    path.write_text(_script("fish"))
    done = subprocess.run(["fish", "--no-config", "-c", f"source {path}; complete -C'hlsdecrypt de'; "
                                                         "complete -C'hlsdecrypt decrypt --key-source '"],
                          capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    offered = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert offered == ["decrypt", "api", "auto", "none", "uri"]


def test_the_man_page_renders_with_its_sections():
    done = subprocess.run([sys.executable, "-m", "hlsdecrypt", "man"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    page = done.stdout
    assert page.startswith(".TH HLSDECRYPT 1 ")
    sections = re.findall(r"^\.SH (.+)$", page, re.M)
    assert sections == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT",
                        "FILES", "SEE ALSO"]
    assert re.findall(r'^\.SS "hlsdecrypt (\w+)"$', page, re.M) == ["decrypt", "keys", "verify", "encrypt",
                                                                     "completion", "man"]
    assert not [line for line in page.splitlines() if line[:1] in (".", "'") and not re.match(r"[.'][A-Za-z]{1,2}\b",
                                                                                             line)]
    if not shutil.which("groff"):
        pytest.skip("groff is not installed: the roff was checked, not rendered")
    shown = subprocess.run(["groff", "-man", "-Tutf8", "-ww"], input=page, capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    text = re.sub(r".\x08", "", shown.stdout)  # groff's overstrike bold
    for expected in ("EXIT STATUS", "130", "--key-cache FILE", "--json-summary FILE", "HLSDECRYPT_CONFIG",
                     "~/.config/hlsdecrypt/config.toml", "hlsdecrypt completion [options] bash|zsh|fish"):
        assert expected in text, expected


# -- the JSON summary ------------------------------------------------------------------------

def _summary(path: Path) -> dict:
    document = json.loads(path.read_text())
    jsonschema.validate(document, SUMMARY_SCHEMA)
    return document


def test_json_summary_says_what_was_written_and_which_source_gave_each_key(run, tmp_path):
    out, summary = tmp_path / "out.ts", tmp_path / "summary.json"
    code, err = run("decrypt", FIXTURES / LIVE, "--keys", FIXTURES / "live_rotation/keys.json", "-o", out,
                    "--json-summary", summary)
    assert code == 0, err
    document = _summary(summary)
    assert (document["result"], document["exit_code"], document["counts"]["ok"]) == ("ok", 0, 1)
    [stream] = document["streams"]
    assert stream["outputs"] == [{"path": str(out), "bytes": out.stat().st_size, "what": "stream"}]
    assert sha256(out) == CLEAR_SHA
    assert (stream["status"], stream["segments"], stream["written_segments"], stream["gaps"]) == ("ok", 6, 6, 0)
    assert [k["key_id"] for k in stream["keys"]] == list(LIVE_KEYS)
    assert {k["source"] for k in stream["keys"]} == {f"keys file {FIXTURES / 'live_rotation/keys.json'}"}
    assert not any(value in summary.read_text() for value in LIVE_KEYS.values())


def test_json_summary_lists_gaps_and_missing_parts(run, fixtures, tmp_path):
    summary = tmp_path / "summary.json"
    (fixtures / "implicit_iv/seg4.ts").unlink()
    code, _ = run("decrypt", fixtures / "wild/gap.m3u8", "--allow-any-path", "--skip-missing", "-o",
                  tmp_path / "out.ts", "--json-summary", summary)
    assert code == 5
    document = _summary(summary)
    [stream] = document["streams"]
    assert (document["result"], document["exit_code"], stream["status"]) == ("failed", 5, "incomplete")
    assert stream["gaps"] == 1 and len(stream["missing"]) == 1 and "seg4.ts" in stream["missing"][0]
    assert stream["written_segments"] == stream["segments"] - 2


def test_json_summary_of_a_batch_has_one_entry_per_stream(run, tmp_path):
    (tmp_path / "exists.ts").write_bytes(b"mine")
    batch = tmp_path / "batch.txt"
    batch.write_text(f"{FIXTURES / IMPLICIT} {tmp_path / 'a.ts'}\n{FIXTURES / IMPLICIT} {tmp_path / 'exists.ts'}\n"
                     f"{tmp_path / 'missing.m3u8'} {tmp_path / 'c.ts'}\n")
    summary = tmp_path / "summary.json"
    code, _ = run("decrypt", "--batch", batch, "--json-summary", summary)
    assert code == 3
    document = _summary(summary)
    assert [s["status"] for s in document["streams"]] == ["ok", "skipped", "failed"]
    assert document["counts"] == {"ok": 1, "incomplete": 0, "failed": 1, "skipped": 1}
    assert document["streams"][2]["error"]["exit_code"] == 3 and "missing.m3u8" in document["streams"][2]["error"][
        "message"]
    assert document["bytes"] == (tmp_path / "a.ts").stat().st_size
    assert (tmp_path / "exists.ts").read_bytes() == b"mine"


def test_json_summary_of_a_failed_run_names_the_error(run, fixtures, tmp_path):
    (fixtures / "implicit_iv/seg2.ts").unlink()
    summary = tmp_path / "summary.json"
    code, err = run("decrypt", fixtures / IMPLICIT, "-o", tmp_path / "out.ts", "--json-summary", summary)
    assert code == 5
    [stream] = _summary(summary)["streams"]
    assert stream["status"] == "failed" and stream["error"]["exit_code"] == 5
    assert "segment 9 (line 11)" in stream["error"]["message"] and stream["outputs"] == []


def test_json_summary_to_stdout_and_not_beside_the_stream(capsys, tmp_path):
    code = main(["decrypt", str(FIXTURES / IMPLICIT), "-o", str(tmp_path / "out.ts"), "--json-summary", "-"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, SUMMARY_SCHEMA)
    assert document["streams"][0]["output"] == str(tmp_path / "out.ts")
    code = main(["decrypt", str(FIXTURES / IMPLICIT), "-o", "-", "--json-summary", "-"])
    captured = capsys.readouterr()
    assert code == 2 and "stdout carries the clear stream" in captured.err and captured.out == ""


# -- the README says what the code does -------------------------------------------------------

README = (ROOT / "README.md").read_text()


def test_the_readme_lists_what_a_config_file_may_set():
    from hlsdecrypt.config import SETTABLE

    paragraph = README[README.index("What may be set:"):README.index("Credentials never live")]
    listed = set(re.findall(r"`([a-z][a-z-]+)`", paragraph))
    assert listed == SETTABLE


def test_the_readme_summary_example_has_the_fields_of_the_schema():
    section = README[README.index("### A summary for scripts"):]
    example = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))
    assert set(example) == set(SUMMARY_SCHEMA["required"])
    assert set(example["streams"][0]) == set(SUMMARY_SCHEMA["$defs"]["stream"]["required"])

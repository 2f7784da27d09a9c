"""The manual page, hlsdecrypt(1), generated as roff from the command line's own parser.

Generated at run time (``hlsdecrypt man``), so that the page always describes the version
installed, with no build step and no extra package: argparse-manpage would need one of each,
and has no place for the EXIT STATUS, ENVIRONMENT and FILES sections a man page is read for.
"""

from __future__ import annotations

import argparse
import re

from . import __version__

#: What the environment changes; the parser cannot know these.
ENVIRONMENT = (
    ("VOLC_ACCESSKEY, VOLC_SECRETKEY", "access keys for the key API (GetHLSEncryptDataKey)"),
    ("VOLCENGINE_ACCESS_KEY, VOLCENGINE_SECRET_KEY, VOLCENGINE_SESSION_TOKEN",
     "the newer SDKs' names for the same, with an STS session token"),
    ("HLSDECRYPT_API_ENDPOINT", "the key API's endpoint when --api-endpoint is not given"),
    ("HLSDECRYPT_KEY_STORE", "the Redis URL of a fleet's key store when --key-store is not given"),
    ("HLSDECRYPT_KEY_STORE_SECRET", "seals the keys kept in the key store"),
    ("HLSDECRYPT_CONFIG", "the config file to read instead of the default one; empty: none"),
    ("XDG_CONFIG_HOME", "where the default config file lives (default ~/.config)"),
)
FILES = (
    ("~/.config/hlsdecrypt/config.toml",
     "defaults set once (key cache, key API endpoint and rate, jobs, timeouts, request headers); "
     "the command line wins; never credentials"),
    ("~/.volc/credentials", "access keys, INI: [default] access_key_id, secret_access_key"),
    ("~/.volc/config", "access keys, JSON: {\"ak\": ..., \"sk\": ...}"),
    ("~/.cache/hlsdecrypt/", "the lock files that share the key API's rate limit between processes"),
)
#: Options every command takes, described once.
COMMON = ("-h", "-v", "-q", "--version")


def manpage(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    out = [f'.TH {prog.upper()} 1 "" "{prog} {__version__}" "User Commands"',
           ".SH NAME", f"{prog} \\- {_text(_lower_first(parser.description or ''))}",
           ".SH SYNOPSIS"]
    commands = _commands(parser)
    for name, sub, _ in commands:
        out += [f".B {prog} {name}", _synopsis(sub), ".br"]
    out += [".SH DESCRIPTION", _text(parser.description or ""),
            ".SH OPTIONS", "These go before the command or after it:"]
    for action in parser._actions:
        if action.option_strings:
            out += _option(action)
    out.append(".SH COMMANDS")
    for name, sub, help_text in commands:
        out += [f'.SS "{prog} {name}"', _text(sub.description or help_text)]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if not set(a.option_strings) & set(COMMON)]
            if not actions:
                continue
            out += [".PP", f".I {_text(group.title or '')}"]
            for action in actions:
                out += _option(action)
    out += [".SH EXIT STATUS", ".TP"] if parser.epilog else []
    for code, meaning in _exit_codes(parser.epilog or ""):
        out += [f".B {code}", _text(meaning), ".TP"]
    if parser.epilog:
        out.pop()
    out.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT:
        out += [".TP", f".B {_text(name)}", _text(meaning)]
    out.append(".SH FILES")
    for name, meaning in FILES:
        out += [".TP", f".I {_text(name)}", _text(meaning)]
    out += [".SH SEE ALSO", ".BR ffmpeg (1),",
            _text("and the README of hlsdecrypt, which says more: where keys come from, the JSON shapes, "
                  "many machines.")]
    return "\n".join(out) + "\n"


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return found


def _synopsis(sub: argparse.ArgumentParser) -> str:
    """``[options] SOURCE...``: the operands, and how many."""
    words = ["[\\fIoptions\\fR]"]
    for action in sub._actions:
        if action.option_strings:
            continue
        name = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        ellipsis = " .\\|.\\|." if action.nargs in ("*", "+") else ""
        words.append(f"\\fI{_text(name)}\\fR{ellipsis}")
        if action.choices:
            words[-1] = "|".join(f"\\fB{c}\\fR" for c in action.choices)
    return " ".join(words)


def _option(action: argparse.Action) -> list[str]:
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if action.choices:
        metavar = "|".join(map(str, action.choices))
    value = f"\\fI{_text(metavar)}\\fR" if action.nargs != 0 else ""
    flags = ", ".join(f"\\fB{_flag(flag)}\\fR" for flag in action.option_strings)
    return [".TP", " ".join(word for word in (flags, value) if word), _text((action.help or "").replace("%%", "%"))]


def _exit_codes(epilog: str) -> list[tuple[str, str]]:
    """The ``exit codes:`` table of the epilog, laid out for people in columns: code, meaning."""
    table = epilog.partition("exit codes:")[2]
    return re.findall(r"(\d+)\s+(.+?)(?=\s{2,}\d|\s*\n|\s*$)", table)


def _flag(flag: str) -> str:
    return flag.replace("-", "\\-")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:].rstrip(".")


def _text(text: str) -> str:
    """Text as roff reads it: backslashes escaped, no line taken for a request, option dashes kept."""
    text = re.sub(r"\s+", " ", text.replace("\\", "\\e")).strip()
    text = re.sub(r"(?<![\w-])--?(?=\w)", lambda m: m.group(0).replace("-", "\\-"), text)
    return "\\&" + text if text[:1] in (".", "'") else text

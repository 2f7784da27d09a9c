"""The config file: defaults an operator sets once (a key cache, the API's endpoint and rate, jobs,
timeouts, request headers), read before the command line, which wins.

It is ``$HLSDECRYPT_CONFIG`` when that is set (empty: no file at all), else
``$XDG_CONFIG_HOME/hlsdecrypt/config.toml`` (``~/.config/hlsdecrypt/config.toml``) when it exists.
TOML, keyed by the long options without their dashes::

    key-cache = "~/.cache/hlsdecrypt/keys.json"   # every command that has the option
    api-rate = 1
    jobs = 8

    [verify]                                      # one command's own, over the ones above
    strict = true

Any option of the parser could be set so; ``SETTABLE`` says which may be. Credentials never live
here (they live where the provider's SDKs keep them), nor does what names one run's inputs and
outputs (``-o``, ``--batch``, ``--keys``) or loosens a safeguard (``--force``,
``--allow-any-path``). A key that is unknown, not settable or a credential is a usage error that
names the file and the key, before anything runs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import UsageError

CONFIG_ENV = "HLSDECRYPT_CONFIG"

#: Options an operator may set once, by their long name. The parser decides which command has which.
SETTABLE = frozenset({
    # keys
    "key-cache", "key-store", "key-source", "key-id-param", "credentials",
    # the key API
    "api-endpoint", "region", "api-rate",
    # fetching
    "variant", "jobs", "timeout", "deadline", "retries",
    # requests (where this version has them)
    "header", "user-agent", "cookies", "proxy", "ca-bundle", "append-url-params",
    # decrypt and verify policies
    "resume", "strict", "expect-rotation", "audio", "remux", "keep-ts",
})
#: Names that hold a secret, however spelt: refused with a word on where credentials belong.
SECRET_NAMES = frozenset({
    "key", "ak", "sk", "access-key", "secret-key", "access-key-id", "secret-access-key", "session-token",
    "secret", "password", "token", "volc-accesskey", "volc-secretkey",
})
#: Request headers that carry credentials: the config file is no place for them either.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-security-token", "x-api-key"})
WHERE_CREDENTIALS_LIVE = ("credentials never live in the config file: set VOLC_ACCESSKEY and VOLC_SECRETKEY, "
                          "write ~/.volc/credentials, or name a file with credentials = \"FILE\"")


@dataclass(frozen=True)
class Config:
    """What a config file set: per command, option dest -> value; ``lists`` for repeatable options
    (``--header``), whose values are merged with the command line's after parsing."""

    path: str | None
    looked_for: str
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    lists: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    keys: tuple[str, ...] = ()  # the keys the file set, for -v

    def describe(self) -> str:
        """What ``-v`` says: the file read and the keys it set (never their values), or where none was found."""
        if self.path is None:
            return f"no config file ({self.looked_for})"
        return f"config file {self.path}: {', '.join(self.keys) or 'nothing set'}"

    def settle(self, args: argparse.Namespace) -> None:
        """Merge repeatable options: the file's values first, then the command line's; a value named
        ``Name: …`` (a header) given on the command line replaces the file's of the same name."""
        for dest, values in self.lists.get(getattr(args, "command", None) or "", {}).items():
            given = list(getattr(args, dest, None) or [])
            named = {_name(value) for value in given}
            setattr(args, dest, [v for v in values if _name(v) not in named] + given)


def config_path(environ: Mapping[str, str] = os.environ) -> tuple[str | None, str]:
    """The file to read (None: none) and where it was looked for, for ``-v``."""
    if CONFIG_ENV in environ:
        named = environ[CONFIG_ENV]
        if not named:
            return None, f"${CONFIG_ENV} is empty"
        if not os.path.isfile(named):
            raise UsageError(f"${CONFIG_ENV} names {named}: no such file")
        return named, f"${CONFIG_ENV}"
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = os.path.join(base, "hlsdecrypt", "config.toml")
    return (path if os.path.isfile(path) else None), f"looked for {path}"


def load_config(parser: argparse.ArgumentParser, environ: Mapping[str, str] = os.environ) -> Config:
    """Read the config file, check every key against ``parser``, and make its values the parser's defaults."""
    path, looked_for = config_path(environ)
    if path is None:
        return Config(None, looked_for)
    table = _read(path)
    commands = _commands(parser)
    folder = os.path.dirname(os.path.abspath(path))
    settings: list[tuple[str, str, Any, list[str]]] = []  # (where, option, value, the commands it is for)
    for key, value in table.items():  # first the keys for every command, then each command's table over them
        if not isinstance(value, dict):
            name = _check_name(f"{path}: {key}", key, commands)
            settings.append((f"{path}: {key}", name, value, [c for c in commands if name in commands[c].options]))
    for command, value in table.items():
        if not isinstance(value, dict):
            continue
        if command not in commands:
            raise UsageError(f"{path}: [{command}]: no such command (tables are named after commands: "
                             f"{', '.join(commands)})")
        for key, raw in value.items():
            where = f"{path}: [{command}] {key}"
            name = _check_name(where, key, commands)
            if name not in commands[command].options:
                raise UsageError(f"{where}: {command} has no option --{name}")
            settings.append((where, name, raw, [command]))
    defaults: dict[str, dict[str, Any]] = {}
    lists: dict[str, dict[str, list[str]]] = {}
    for where, name, raw, applies_to in settings:
        for command in applies_to:
            action = commands[command].options[name]
            value = _value(where, name, action, raw, folder)
            into = lists if isinstance(action, argparse._AppendAction) else defaults
            into.setdefault(command, {})[action.dest] = value
    for command, values in defaults.items():
        commands[command].parser.set_defaults(**values)
    return Config(path, looked_for, defaults, lists, tuple(dict.fromkeys(name for _, name, _, _ in settings)))


@dataclass(frozen=True)
class _Command:
    parser: argparse.ArgumentParser
    options: dict[str, argparse.Action]  # long name without dashes -> action


def _commands(parser: argparse.ArgumentParser) -> dict[str, _Command]:
    """The subcommands, each with its long options."""
    found: dict[str, _Command] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                options = {opt[2:]: a for a in sub._actions for opt in a.option_strings if opt.startswith("--")}
                found[name] = _Command(sub, options)
    return found


def _read(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, by its older name
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found]
        except ImportError:
            raise UsageError(f"{path}: reading a config file needs Python 3.11, or the tomli package "
                             f"(pip install tomli); or set {CONFIG_ENV}= to read none") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


def _check_name(where: str, key: str, commands: dict[str, _Command]) -> str:
    """The option a key names (``key_cache`` and ``key-cache`` alike), if the file may set it."""
    name = key.replace("_", "-").lower()
    if name in SECRET_NAMES or any(word in name for word in ("secret", "password", "token")):
        raise UsageError(f"{where}: {WHERE_CREDENTIALS_LIVE}")
    known = {option for command in commands.values() for option in command.options}
    if name not in known:
        settable = sorted(SETTABLE & known)
        raise UsageError(f"{where}: unknown key (a config file may set: {', '.join(settable)})")
    if name not in SETTABLE:
        raise UsageError(f"{where}: --{name} belongs on the command line, run by run, not in a config file")
    return name


def _value(where: str, name: str, action: argparse.Action, raw: Any, folder: str) -> Any:
    """The value as the parser would have made it from the command line, checked as strictly."""
    if action.nargs == 0:  # a flag
        if not isinstance(raw, bool):
            raise UsageError(f"{where}: want true or false")
        return raw
    if isinstance(action, argparse._AppendAction):
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UsageError(f"{where}: want a string or a list of strings")
        for value in values:
            _refuse_secret_header(where, value)
        return values
    if action.type in (int, float):
        wanted = (int,) if action.type is int else (int, float)
        if isinstance(raw, bool) or not isinstance(raw, wanted):  # TOML's true is no number, nor 2.5 a count
            raise UsageError(f"{where}: want {'a whole number' if action.type is int else 'a number'}")
        value = action.type(raw)
    else:
        if not isinstance(raw, str):
            raise UsageError(f"{where}: want a string")
        value = raw
        if action.metavar == "FILE":  # ~ as a shell would; a relative path from the config file's folder
            value = os.path.join(folder, os.path.expanduser(raw))
        elif action.metavar == "URL" and (urlsplit(raw).password or urlsplit(raw).username):
            instead = "in $HLSDECRYPT_KEY_STORE" if name == "key-store" else "on the command line"
            raise UsageError(f"{where}: the URL holds credentials, and credentials never live in the config "
                             f"file: give this URL {instead}")
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where}: want one of {', '.join(map(str, action.choices))}, not {value!r}")
    return value


def _refuse_secret_header(where: str, value: str) -> None:
    name = value.partition(":")[0].strip()
    if name.lower() in SECRET_HEADERS:
        raise UsageError(f"{where}: the {name} header is a credential, and credentials never live in the config "
                         "file: give it with --header on the command line")


def _name(value: str) -> str:
    """A header's name (``Referer: …`` -> ``referer``), or the value itself."""
    name, colon, _ = value.partition(":")
    return name.strip().lower() if colon else value

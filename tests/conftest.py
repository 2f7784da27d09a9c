from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest

from hlsdecrypt.cli import main

from servers import StaticServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fixtures(tmp_path: Path) -> Path:
    """A private copy of fixtures/, so a test may change or break files freely."""
    copy = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, copy, copy_function=shutil.copyfile)  # no metadata: twice as fast
    return copy


@pytest.fixture
def served(fixtures: Path):
    with StaticServer(fixtures) as server:
        yield server


@pytest.fixture
def run(capsys):
    """Run the CLI in-process: returns (exit code, stderr)."""

    def _run(*argv: str) -> tuple[int, str]:
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return _run


@pytest.fixture(autouse=True)
def no_shared_key_store(monkeypatch):
    """A developer's own HLSDECRYPT_KEY_STORE must not join the tests to a real fleet's Redis,
    nor a developer's own config file change the defaults the tests expect."""
    monkeypatch.delenv("HLSDECRYPT_KEY_STORE", raising=False)
    monkeypatch.delenv("HLSDECRYPT_KEY_STORE_SECRET", raising=False)
    monkeypatch.setenv("HLSDECRYPT_CONFIG", "")


@pytest.fixture(autouse=True)
def fresh_logger():
    """main() sets up the process's logger (its own handler, no propagation): undo it after each test,
    so that a later test's caplog sees the records again whichever tests ran before it."""
    yield
    log = logging.getLogger("hlsdecrypt")
    log.handlers.clear()
    log.propagate = True
    log.setLevel(logging.NOTSET)

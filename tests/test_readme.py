"""The README's promises: its quick start works and prints the sha256 it shows; CI runs its test command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
COMMANDS = re.findall(r"```sh\n(.*?)\n```", README, re.S)


def test_quick_start_decrypts_to_the_sha256_the_readme_shows(tmp_path):
    quick_start = COMMANDS[0]
    decrypt = next(step for step in quick_start.split(" && ") if step.startswith("hlsdecrypt decrypt"))
    argv = shlex.split(decrypt)
    argv[argv.index("-o") + 1] = str(tmp_path / "clear.ts")
    argv = [str(ROOT / a) if a.startswith("fixtures/") else a for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = re.search(r"The sha256 printed, `([0-9a-f]{64})`", README).group(1)
    assert subprocess.run(["sha256sum", str(tmp_path / "clear.ts")], capture_output=True,
                          text=True).stdout.split()[0] == shown


def test_ci_runs_the_readme_test_command():
    test_command = COMMANDS[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci/run").read_text().splitlines()


def test_the_python_api_examples_run():
    section = README[README.index("## Python API"):README.index("## Benchmarks")]
    examples = re.findall(r"```python\n(.*?)\n```", section, re.S)
    assert len(examples) == 3
    for example in examples:
        done = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

"""What CI runs: lint before the suite, and a per-test timeout so a hung test fails
instead of blocking the run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from recsys.settings import PROJECT_ROOT


def test_every_test_has_a_timeout_above_the_slowest(pytestconfig: pytest.Config) -> None:
    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert declared["tool"]["pytest"]["ini_options"]["timeout"] >= 600
    # And pytest-timeout, not just the file, sees it (a typo'd key would be ignored).
    assert float(pytestconfig.getini("timeout")) >= 600


def test_a_hung_test_fails_by_the_timeout(tmp_path: Path) -> None:
    """The plugin is active in this environment: a test past its timeout fails."""
    (tmp_path / "test_hangs.py").write_text(
        textwrap.dedent("""
        import time
        def test_hangs():
            time.sleep(60)
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=2",
         str(tmp_path / "test_hangs.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Timeout" in result.stdout


def test_ci_lints_before_it_tests() -> None:
    commands = [
        line.strip()
        for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make ")
    ]
    assert commands == ["make lint", "make test"]

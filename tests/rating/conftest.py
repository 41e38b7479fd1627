"""Fixtures of the rating tests: tiny image folders, and the session-scoped Chromium + chromedriver finder (installed
with apt-get when missing and possible, else a skip with the reason)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rating.helpers import make_folder


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium through selenium (deselect: -m 'not browser')")


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """A real folder (12 images) and two fake folders (10 images each, the second 32x32 RGB)."""
    return {"real": make_folder(tmp_path / "data" / "real", 12, seed=1),
            "a": make_folder(tmp_path / "runs" / "a" / "samples", 10, seed=2),
            "b": make_folder(tmp_path / "runs" / "b" / "samples", 10, side=32, seed=3, mode="RGB")}


def _install_chromium() -> str | None:
    """None when installed, else why not (the first line of apt-get's complaint)."""
    if os.geteuid() != 0:
        return "not root (apt-get install chromium chromium-driver needs root)"
    if shutil.which("apt-get") is None:
        return "no apt-get (install chromium and chromedriver yourself)"
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:  # the package lists may be missing on a fresh machine: fetch them, then once more
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True, timeout=600)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        first = next((line for line in (result.stderr or result.stdout).splitlines() if line.strip()), "no output")
        return f"install failed: {first}"
    return None


@pytest.fixture(scope="session")
def chromium_tools() -> tuple[str, str]:
    """Paths of chromium and chromedriver (Debian's packages)."""
    def found() -> tuple[str | None, str | None]:
        return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")

    browser, driver = found()
    if not (browser and driver):
        problem = _install_chromium()
        browser, driver = found()
        if not (browser and driver):
            pytest.skip(f"headless Chromium test: no chromium + chromedriver: {problem or 'not on PATH after apt-get'}")
    return browser, driver

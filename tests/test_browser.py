"""A learner's first contact, in a real browser: JupyterLab serves lesson 01, headless Chromium runs all its
cells, and the timestep slider (an ipywidgets IntSlider) must render.

Needs Debian's `chromium` (`apt-get install -y chromium`; .ci/run installs it) and the `playwright` package
(in the dev extra). Playwright's own browser download is not used: the system browser is launched directly.
Without a browser the test is skipped with that advice, unless DITLIB_REQUIRE_BROWSER=1 (set by .ci/run),
in which case it fails.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "01_forward_noising.ipynb"
QUIET_CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


def _browser() -> str | None:
    for candidate in (os.environ.get("DITLIB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _missing(reason: str):
    if os.environ.get("DITLIB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test is required here (DITLIB_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(f"{reason}; to run this test: `sudo apt-get install -y chromium` (or set DITLIB_CHROMIUM to a "
                "Chromium/Chrome binary) and `pip install playwright`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve_jupyterlab(tmp_path: Path):
    """JupyterLab on a free local port, serving a scratch copy of lesson 01 (so nothing is saved into the repo)."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(LESSON, served / LESSON.name)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "DITLIB_QUICK": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={served}", "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "jupyterlab.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_lesson_01_runs_in_jupyterlab_and_shows_the_timestep_slider(tmp_path):
    browser_path = _browser()
    if browser_path is None:
        _missing("no Chromium was found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the `playwright` package is not installed")

    with serve_jupyterlab(tmp_path) as (url, token):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=QUIET_CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{LESSON.name}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            # A notebook without a stored kernel asks which one to start: accept the default.
            try:
                page.get_by_role("button", name="Select").click(timeout=5_000)
            except Exception:
                pass
            page.wait_for_selector(".jp-Notebook-cell", timeout=30_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            slider = page.wait_for_selector(".widget-slider", timeout=240_000)
            assert slider.is_visible() or slider.bounding_box() is not None
            # The last cell's confirmation appears once every cell has run.
            page.wait_for_selector("text=q_sample matches ditlib", timeout=240_000)
            slider.scroll_into_view_if_needed()
            shot = tmp_path / "lesson01.png"
            page.screenshot(path=str(shot), full_page=False)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback")
            assert errors.count() == 0, "a cell raised an error in the browser"
            browser.close()
        assert shot.stat().st_size > 10_000, "the screenshot is empty"

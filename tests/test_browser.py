"""A learner's first contact, in a real browser: JupyterLab serves lesson 01, headless Chromium runs all its
cells, and the timestep slider (an ipywidgets IntSlider) must render. A second test drives one widget of each
kind the course uses (IntSlider, ToggleButtons, FloatSlider) in a small purpose-built notebook and checks that
each one's picture changes when its control is moved in the browser.

Needs Debian's `chromium` (`apt-get install -y chromium`; .ci/run installs it) and the `playwright` package
(in the dev extra). Playwright's own browser download is not used: the system browser is launched directly.
Without a browser the test is skipped with that advice, unless DITLIB_REQUIRE_BROWSER=1 (set by .ci/run),
in which case it fails.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
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
def serve_jupyterlab(tmp_path: Path, notebooks: dict | None = None):
    """JupyterLab on a free local port, its root a scratch folder (so nothing is saved into the repo).

    The folder holds a copy of lesson 01, or, if given, `notebooks` ({file name: nbformat notebook}).
    """
    served = tmp_path / "served"
    served.mkdir()
    if notebooks is None:
        shutil.copy(LESSON, served / LESSON.name)
    else:
        import nbformat

        for name, notebook in notebooks.items():
            nbformat.write(notebook, str(served / name))
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


def _playwright():
    """(chromium path, sync_playwright), or skip/fail with advice when either is missing."""
    browser_path = _browser()
    if browser_path is None:
        _missing("no Chromium was found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the `playwright` package is not installed")
    return browser_path, sync_playwright


def _open_and_run_all(page, url: str, token: str, name: str, kernel_dialog_s: float = 5.0) -> None:
    """Open notebook `name` in JupyterLab and start Run ▸ Run All Cells."""
    page.goto(f"{url}/lab/tree/{name}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    # A notebook without a stored kernel asks which one to start: accept the default.
    try:
        page.get_by_role("button", name="Select").click(timeout=kernel_dialog_s * 1000)
    except Exception:
        pass
    page.wait_for_selector(".jp-Notebook-cell", timeout=30_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def _assert_no_traceback(page) -> None:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback")
    assert errors.count() == 0, "a cell raised an error in the browser:\n" + "\n".join(errors.all_inner_texts())[-3000:]


def test_lesson_01_runs_in_jupyterlab_and_shows_the_timestep_slider(tmp_path):
    browser_path, sync_playwright = _playwright()

    with serve_jupyterlab(tmp_path) as (url, token):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=QUIET_CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open_and_run_all(page, url, token, LESSON.name)
            slider = page.wait_for_selector(".widget-slider", timeout=240_000)
            assert slider.is_visible() or slider.bounding_box() is not None
            # The last cell's confirmation appears once every cell has run.
            page.wait_for_selector("text=q_sample matches ditlib", timeout=240_000)
            slider.scroll_into_view_if_needed()
            shot = tmp_path / "lesson01.png"
            page.screenshot(path=str(shot), full_page=False)
            _assert_no_traceback(page)
            browser.close()
        assert shot.stat().st_size > 10_000, "the screenshot is empty"


# One widget of each kind the course uses, on inputs that need no trained model (each cell runs in ~1 s).
WIDGET_CELLS = {
    "setup": """\
import matplotlib.pyplot as plt
import numpy as np
import torch

from ditlib.course import viz, widgets
from ditlib.data import FashionMNIST
from ditlib.diffusion import create_diffusion

torch.manual_seed(0)""",
    "IntSlider": """\
images, _ = FashionMNIST("test").examples(per_class=1, classes=[0, 1, 7])        # (3, 1, 32, 32)
diffusion = create_diffusion("")
viz.timestep_slider(images, diffusion.q_sample, diffusion.alphas_cumprod.numpy(), t=250)""",
    "ToggleButtons": """\
def draw(curve):
    x = np.linspace(0, 2 * np.pi, 200)
    y = {"sin": np.sin(x), "cos": np.cos(x), "square": np.sign(np.sin(x))}[curve]
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(x, y)
    ax.set_title(curve)

viz.choice_widget(["sin", "cos", "square"], draw, description="curve")""",
    "FloatSlider": """\
g = torch.Generator().manual_seed(0)
traj = {"ddpm": [torch.rand(2, 1, 8, 8, generator=g) * 2 - 1 for _ in range(6)],
        "ddim": [torch.rand(2, 1, 8, 8, generator=g) * 2 - 1 for _ in range(3)]}
widgets.trajectory_scrubber(traj, value=0.0)""",
}
WIDGETS_NOTEBOOK = "browser_widgets.ipynb"


def _widgets_notebook():
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in WIDGET_CELLS.values()]
    return notebook


def _digest(src: str | None) -> str:
    """A short name for an <img> src (a data: URL of the PNG) in failure messages."""
    if not src:
        return repr(src)
    data = src.split(",", 1)[-1]
    try:
        data = base64.b64decode(data)
    except ValueError:
        data = data.encode()
    return f"{len(data)} B, sha1 {hashlib.sha1(data).hexdigest()[:10]}"


def _output_image(cell, before: str | None = None, timeout: float = 60.0) -> str:
    """The src of the <img> in `cell`'s widget output, once there is one (and, with `before`, once it differs)."""
    image = cell.locator(".widget-output img")
    deadline = time.monotonic() + timeout
    src = None
    while time.monotonic() < deadline:
        if image.count() == 1:                   # clear_output(wait=True) swaps the picture; 0 or 2 mid-swap
            try:
                src = image.get_attribute("src", timeout=1_000)
            except Exception:
                src = None
            if src and src.startswith("data:image/") and src != before:
                return src
        time.sleep(0.2)
    raise AssertionError(f"the widget's picture did not {'change' if before else 'appear'} within {timeout:.0f} s "
                         f"(before: {_digest(before)}, now: {_digest(src)}, {image.count()} <img>)")


def _readout(cell) -> str:
    return cell.locator(".widget-readout").inner_text().strip()


def _press_and_watch(page, cell, key: str, readouts: list[str]) -> list[str]:
    """Focus the slider handle in `cell` and press `key` once per entry of `readouts`, waiting after each press
    for the slider to read that value and then for the picture to change; returns the pictures seen.

    A guard, never seen needed so far: should a press not reach the handle (the notebook taking the focus back),
    a press the readout does not show is pressed again (never one it shows, so no step is taken twice)."""
    handle = cell.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    pictures = [_output_image(cell)]
    for expected in readouts:
        before = _readout(cell)
        for attempt in range(5):
            if attempt:
                print(f"{key} on the slider reading {before!r} was lost; pressing it again")
            handle.focus()
            page.keyboard.press(key)
            deadline = time.monotonic() + 3.0
            while _readout(cell) == before and time.monotonic() < deadline:
                time.sleep(0.1)
            if _readout(cell) != before:
                break
        assert _readout(cell) == expected, f"after {key} the slider reads {_readout(cell)!r}, not {expected!r}"
        pictures.append(_output_image(cell, before=pictures[-1]))
    return pictures[1:]


def _click_and_watch(cell, shown: str, others: list[str], attempts: int = 4) -> str:
    """Click toggle button `others[0]` in `cell` (where `shown` is active and drawn) and return the new picture.

    A click sends two comm messages at once (the new index and a "click" event). With JupyterLab 4.6's default
    comms over kernel subshells (setting commsOverSubshells = perCommTarget), ipykernel 7 starts the second while
    the first is redrawing and may tag the redraw's display_data with the second's parent msg_id; the Output
    widget, which captures by the first's msg_id, then drops it: the button is active but the picture stays (seen
    in about 1 run in 20 here; with commsOverSubshells "disabled" the two are handled one after the other). A
    learner would click again; so does this: another option, up to `attempts` clicks, each of which must end on
    a picture other than `shown`'s.
    """
    def active(name: str) -> bool:
        return "mod-active" in (cell.locator("button.widget-toggle-button", has_text=name).get_attribute("class") or "")

    assert active(shown), f"{shown!r} is not the selected option"
    before = _output_image(cell)
    for attempt in range(attempts):
        option = others[attempt % len(others)]
        cell.locator("button.widget-toggle-button", has_text=option).click()
        assert active(option), f"clicking {option!r} did not select it"
        try:
            return _output_image(cell, before=before, timeout=8.0 if attempt < attempts - 1 else 60.0)
        except AssertionError:
            if attempt == attempts - 1:
                raise
            print(f"the redraw for {option!r} was lost (Output widget capture over kernel subshells); clicking again")
    raise AssertionError("unreachable")


def _wait_until_all_cells_ran(page, count: int, timeout: float = 120.0) -> None:
    """Every code cell shows an execution count ("[n]:", not "[*]:" or "[ ]:"), i.e. Run All has finished."""
    page.wait_for_function(
        r"""count => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length === count && prompts.every(p => /\[\d+\]/.test(p.textContent));
        }""", arg=count, timeout=timeout * 1000)


def test_widgets_redraw_when_driven_in_jupyterlab(tmp_path):
    """IntSlider (timestep_slider), ToggleButtons (choice_widget), FloatSlider (trajectory_scrubber): move each
    control in the browser, as a learner would, and the picture its output area shows must change."""
    browser_path, sync_playwright = _playwright()
    kinds = list(WIDGET_CELLS)

    with serve_jupyterlab(tmp_path, {WIDGETS_NOTEBOOK: _widgets_notebook()}) as (url, token):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=QUIET_CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                _open_and_run_all(page, url, token, WIDGETS_NOTEBOOK, kernel_dialog_s=2.0)
                cells = page.locator(".jp-Notebook .jp-CodeCell")
                cell = {kind: cells.nth(kinds.index(kind)) for kind in ("IntSlider", "ToggleButtons", "FloatSlider")}
                _wait_until_all_cells_ran(page, len(kinds))
                _assert_no_traceback(page)
                first = {kind: _output_image(c) for kind, c in cell.items()}

                # IntSlider: the keyboard on the noUiSlider handle; continuous_update=False still sends each key press.
                # One press at a time, each waited for, so the last picture is the last value's (not a stale redraw).
                steps = ["251", "252", "253"]
                seen = [first["IntSlider"], *_press_and_watch(page, cell["IntSlider"], "ArrowRight", steps)]

                # ToggleButtons: click another option.
                seen += [first["ToggleButtons"], _click_and_watch(cell["ToggleButtons"], "sin", ["cos", "square"])]

                # FloatSlider: two steps of 1/5 along the longest chain (0 % -> 20 % -> 40 %).
                steps = ["20%", "40%"]
                seen += [first["FloatSlider"], *_press_and_watch(page, cell["FloatSlider"], "ArrowRight", steps)]

                _assert_no_traceback(page)
            except Exception:
                shot = tmp_path / "widgets_failure.png"
                page.screenshot(path=str(shot), full_page=False)
                print(f"screenshot of the page at the failure: {shot}")
                raise
            browser.close()
        assert len(set(seen)) == len(seen) == 9, "two states of the widgets showed the same picture"

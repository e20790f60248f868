"""`make book`: the static course book (mkdocs.yml, book/) built from the committed lessons without running them.

Builds the book once into a temporary folder with the command `make book` runs, then checks that every lesson
and project has a page carrying all of its committed figures, and, in headless Chromium (the helpers of
tests/test_browser.py: skipped with advice without a browser, failed under DITLIB_REQUIRE_BROWSER=1), that a
lesson page served from the build shows a figure and typesets its equations with no network at all.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_browser import QUIET_CHROMIUM_FLAGS, _free_port, _playwright, _wait_for_server

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")) + sorted(ROOT.glob("assignments/*/*.ipynb"))
LESSON = ROOT / "notebooks" / "09_classifier_free_guidance.ipynb"
EMBEDDED_PNG = re.compile(r'<img\s[^>]*src="data:image/png;base64,')


def _page(site: Path, notebook: Path) -> Path:
    return site / notebook.relative_to(ROOT).with_suffix(".html")


def _first_heading(notebook: Path) -> str:
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise AssertionError(f"{notebook.name} has no '# ' heading")


def _png_outputs(notebook: Path) -> int:
    return sum("image/png" in out.get("data", {}) for cell in json.loads(notebook.read_text())["cells"]
               if cell["cell_type"] == "code" for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> tuple[Path, str, float]:
    """The book built into a temporary folder: (site folder, mkdocs' log, seconds the build took)."""
    pytest.importorskip("mkdocs_jupyter", reason='the book extra is not installed: pip install -e ".[book]"')
    site = tmp_path_factory.mktemp("book") / "site"
    mkdocs = Path(sys.executable).with_name("mkdocs")  # $(BIN)/mkdocs, as in the Makefile's book target
    start = time.monotonic()
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return site, proc.stdout + proc.stderr, seconds


def test_every_lesson_has_a_page_with_its_committed_figures(book):
    site, log, seconds = book
    assert len(NOTEBOOKS) >= 13, NOTEBOOKS  # 00 … 11 and the capstone
    assert (site / "index.html").is_file()
    index = (site / "index.html").read_text()
    for notebook in NOTEBOOKS:
        page = _page(site, notebook)
        assert page.is_file(), f"the book has no page for {notebook.relative_to(ROOT)}"
        html = page.read_text()
        assert _first_heading(notebook) in html, f"{page.name} lacks its lesson's heading"
        # every committed figure is embedded in the page (mkdocs-jupyter inlines PNG outputs as data: URIs)
        assert len(EMBEDDED_PNG.findall(html)) == _png_outputs(notebook), f"{page.name} lost figures"
        assert (page.parent / notebook.name).is_file(), f"{notebook.name} is not offered beside its page"
        assert str(page.relative_to(site)) in index, f"the index does not link {page.name}"
        # rendered from the committed outputs, never executed
        assert f"Converting notebook (execute=False): {notebook}" in log
    assert "execute=True" not in log
    # the lessons' "next lesson" links lead to the next page, not to the raw .ipynb
    assert 'href="01_forward_noising.html"' in _page(site, NOTEBOOKS[0]).read_text()
    assert seconds < 120, f"the book took {seconds:.0f} s to build: is something executing the notebooks?"
    # The equations render offline: MathJax is in the book and each page points at it relatively.
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()
    assert '<script src="../assets/mathjax/MathJax.js?' in _page(site, LESSON).read_text()


def test_lesson_page_shows_a_figure_and_its_equations_in_a_browser_offline(book, tmp_path):
    site, _, _ = book
    browser_path, sync_playwright = _playwright()

    port = _free_port()
    log = tmp_path / "http.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(site)], stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/index.html", server, log, timeout=30)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=QUIET_CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # No network: anything not served from the book itself (the widgets' CDN scripts) is refused.
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else route.abort())
            page.goto(f"{base}/{_page(site, LESSON).relative_to(site)}", wait_until="domcontentloaded",
                      timeout=30_000)
            assert _first_heading(LESSON) in page.locator("h1").first.inner_text()
            figure = page.locator(".jp-OutputArea-output img").first
            figure.scroll_into_view_if_needed(timeout=10_000)
            figure.wait_for(state="visible", timeout=10_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle(),
                                   timeout=10_000)
            box = figure.bounding_box()
            assert box and box["width"] > 50 and box["height"] > 50, f"the figure is not shown: {box}"
            # MathJax (served from the book) typesets the lesson's equations.
            page.wait_for_function("document.querySelectorAll('.MathJax, .MathJax_Display, .mjx-chtml').length > 0",
                                   timeout=30_000)
            page.screenshot(path=str(tmp_path / "lesson09.png"), full_page=False)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert (tmp_path / "lesson09.png").stat().st_size > 10_000, "the screenshot is empty"

"""`make book`: the static course book (mkdocs.yml, book/) built from the committed lessons without running them.

Builds the book once into a temporary folder with the command `make book` runs, then checks that every lesson
and project has a page carrying all of its committed figures, that each page's table of contents lists its
headings word for word (inline code included) with working anchors, and that no page shows the tests' markers
(`# NBVAL_CHECK_OUTPUT`) or nbgrader's hidden tests. In headless Chromium at 1280 px (the helpers of
tests/test_browser.py: skipped with advice without a browser, failed under DITLIB_REQUIRE_BROWSER=1), served
from the build with no network at all: the index and lesson 09 render (every image shown, no raw Markdown), the
lesson shows a figure and typesets its equations, its TOC entry with inline code leads to its heading, and no
lesson's code cell scrolls sideways.

DITLIB_BOOK_SCREENSHOT=1 also saves the browser's view of lesson 09 as docs/book-lesson-09.png:
    DITLIB_BOOK_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_book.py -k browser
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
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
# Lesson 09's heading "7. Exercise: `forward_with_cfg`, …", which mkdocs-jupyter's own TOC showed as
# "7. Exercise: , the guided forward pass".
CODE_HEADING = "7. Exercise: forward_with_cfg, the guided forward pass"
# For the tests, not the reader: book/hooks.py takes these lines out of the code cells (the notebooks keep them).
NOT_FOR_READERS = ("NBVAL_", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
HEADINGS = ", ".join(f".jp-MarkdownCell h{level}" for level in range(1, 7))  # a lesson's own, not its outputs'
VIEWPORT = {"width": 1280, "height": 1000}  # both of mkdocs-material's sidebars shown (from 1220 px): narrow code
SCREENSHOT = ROOT / "docs" / "book-lesson-09.png"


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


def _soup(page: Path):
    """A built page, parsed, without the '¶' anchor link that nbconvert appends to each heading."""
    from bs4 import BeautifulSoup  # a dependency of nbconvert, in the book extra

    soup = BeautifulSoup(page.read_text(), "html.parser")
    for anchor in soup.select("a.anchor-link"):
        anchor.decompose()
    return soup


def _text(element) -> str:
    return " ".join(element.get_text().split())


def test_every_lesson_toc_lists_its_headings_in_full(book):
    """Each page's table of contents is its headings, word for word with their inline code, each entry linking to
    its heading's id (mkdocs-jupyter's own TOC dropped `code` spans, and the shortened entries' anchors then
    missed their headings; book/hooks.py builds the TOC from the rendered headings instead)."""
    site, _, _ = book
    for notebook in NOTEBOOKS:
        page = _page(site, notebook)
        soup = _soup(page)
        headings = soup.select(HEADINGS)
        assert headings, f"{page.name} has no headings"
        # mkdocs-material lists what lies under a leading h1 (the lesson's title), up to the next h1 if any
        if headings[0].name == "h1":
            headings = list(itertools.takewhile(lambda h: h.name != "h1", headings[1:]))
        expected = [(_text(h), "#" + h.get("id", "(the heading has no id)")) for h in headings]
        tocs = soup.select('nav.md-nav--secondary ul[data-md-component="toc"]')
        assert tocs, f"{page.name} has no table of contents"
        for toc in tocs:  # the sidebar's, and its copy in the navigation for narrow screens
            shown = [(_text(a), a.get("href")) for a in toc.select("a.md-nav__link")]
            wrong = [(s, e) for s, e in itertools.zip_longest(shown, expected) if s != e]
            assert not wrong, f"{page.name}: (TOC entry, heading) as (text, link) differ: {wrong[:4]}"
    toc = _soup(_page(site, LESSON)).select('ul[data-md-component="toc"] a.md-nav__link')
    assert CODE_HEADING in [_text(a) for a in toc], f"lesson 09's TOC lacks {CODE_HEADING!r}"


def test_no_page_shows_the_test_markers_or_hidden_tests(book):
    """nbval's `# NBVAL_CHECK_OUTPUT` lines and nbgrader's hidden tests are there for the tests, not the reader:
    book/hooks.py takes them out of the code cells as it renders (the notebooks keep them). The rest of those
    cells stays, and so do nbgrader's `### BEGIN SOLUTION` / `### END SOLUTION` (lesson 00 explains them)."""
    site, _, _ = book
    for page in [site / "index.html", *(_page(site, notebook) for notebook in NOTEBOOKS)]:
        html = page.read_text()
        shown = [marker for marker in NOT_FOR_READERS if marker in html]
        assert not shown, f"{page.relative_to(site)} shows {shown} to the reader"
    lesson = _page(site, LESSON).read_text()
    assert "exercises.require" not in lesson, "lesson 09 shows the body of its hidden test"
    assert "feedback = exercises.check_forward_with_cfg(forward_with_cfg)" in lesson, "lesson 09 lost its check"
    assert "### BEGIN SOLUTION" in lesson and "### END SOLUTION" in lesson


# In the browser. Every <img> decoded and shown (the figures are data: URIs of the committed PNG outputs).
IMAGES_SHOWN = "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
# Markdown left unrendered in the prose of the elements matching a selector (code and MathJax's TeX aside).
RAW_MARKDOWN = r"""selector => [...document.querySelectorAll(selector)].map(element => {
    const prose = element.cloneNode(true);
    prose.querySelectorAll('code, pre, script, style, .MathJax, .MathJax_Display, .MathJax_Preview')
        .forEach(e => e.remove());
    return prose.textContent;
}).filter(text => /\*\*|\]\(|```|\|\s*-{3}/.test(text)).map(text => text.trim().slice(0, 200))"""
# The code blocks (inputs, and outputs' text) that scroll sideways, i.e. whose content is wider than their box.
OVERFLOWING_CODE = r"""() => {
    const blocks = [...document.querySelectorAll(
        '.jp-InputArea .highlight-ipynb, .jp-InputArea .highlight-ipynb pre, .jp-OutputArea-output pre')];
    return {blocks: blocks.length, overflowing: blocks.filter(b => b.scrollWidth > b.clientWidth + 1).map(
        b => `${b.scrollWidth} > ${b.clientWidth} px: ${b.textContent.trim().split('\n')[0].slice(0, 100)}`)};
}"""
# Resolves once MathJax has typeset what it was given so far (or after 20 s, so as never to hang).
MATHJAX_IDLE = ("() => new Promise(done => { MathJax.Hub.Queue(() => done(true)); "
                "setTimeout(() => done(false), 20000); })")


def _renders(page, name: str, prose: str) -> None:
    """Every image of `page` is shown and the prose in `prose` (a CSS selector) holds no raw Markdown."""
    try:
        page.wait_for_function(IMAGES_SHOWN, timeout=15_000)
    except Exception:
        missing = page.evaluate("() => [...document.images].filter(img => !(img.complete && img.naturalWidth > 0))"
                                ".map(img => img.src.slice(0, 80))")
        raise AssertionError(f"{name}: {len(missing)} image(s) not shown: {missing[:5]}") from None
    raw = page.evaluate(RAW_MARKDOWN, prose)
    assert not raw, f"{name} shows raw Markdown: {raw[:3]}"


def test_index_and_lessons_render_in_a_browser_offline(book, tmp_path):
    site, _, _ = book
    browser_path, sync_playwright = _playwright()

    port = _free_port()
    log = tmp_path / "http.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(site)], stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    shot = tmp_path / "lesson09.png"
    try:
        _wait_for_server(f"{base}/index.html", server, log, timeout=30)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=QUIET_CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport=VIEWPORT)
            # No network: anything not served from the book itself (the widgets' CDN scripts) is refused.
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else route.abort())

            # The index: its title, the table of lessons, rendered.
            page.goto(f"{base}/index.html", wait_until="load", timeout=30_000)
            assert "Diffusion Transformers from scratch" in page.locator("article h1").first.inner_text()
            assert page.locator("article table tbody tr").count() >= 13, "the index lacks its table of lessons"
            _renders(page, "index.html", "article.md-typeset")

            # Lesson 09: a figure, its equations, its prose rendered.
            page.goto(f"{base}/{_page(site, LESSON).relative_to(site)}", wait_until="load", timeout=30_000)
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
            page.evaluate(MATHJAX_IDLE)  # typeset throughout, so that no TeX source is left in the prose
            _renders(page, LESSON.name, ".jp-MarkdownCell")
            found = page.evaluate(OVERFLOWING_CODE)  # its long lines wrap (book/stylesheets/book.css)
            assert found["blocks"] > 0 and not found["overflowing"], f"lesson 09's code scrolls sideways: {found}"

            # Its TOC entry with inline code, in the sidebar, leads to that heading.
            heading = page.locator(".jp-MarkdownCell h2", has_text=CODE_HEADING)
            entry = page.locator(".md-sidebar--secondary a.md-nav__link", has_text=CODE_HEADING)
            assert entry.count() == 1, f"the sidebar's table of contents lacks {CODE_HEADING!r}"
            heading_id = heading.get_attribute("id")
            entry.click()
            page.wait_for_function("() => location.hash.length > 1", timeout=5_000)
            assert page.evaluate("location.hash") == f"#{heading_id}", "the TOC entry misses its heading"
            page.wait_for_function("id => { const r = document.getElementById(id).getBoundingClientRect();"
                                   " return r.top >= 0 && r.bottom <= innerHeight; }", arg=heading_id, timeout=5_000)

            # The view of the lesson: that heading mid-screen, the figure above it and the exercise below.
            heading.evaluate("h => h.scrollIntoView({block: 'center'})")
            page.screenshot(path=str(shot), full_page=False)
            if os.environ.get("DITLIB_BOOK_SCREENSHOT") == "1":
                shutil.copyfile(shot, SCREENSHOT)
                print(f"wrote {SCREENSHOT.relative_to(ROOT)}")

            # No code block of any other lesson scrolls sideways either.
            overflowing = {}
            for notebook in [n for n in NOTEBOOKS if n != LESSON]:
                page.goto(f"{base}/{_page(site, notebook).relative_to(site)}", wait_until="load", timeout=30_000)
                found = page.evaluate(OVERFLOWING_CODE)
                assert found["blocks"] > 0, f"no code blocks found on {notebook.stem}.html"
                if found["overflowing"]:
                    overflowing[notebook.stem] = found["overflowing"][:3]
            assert not overflowing, f"code blocks wider than their cell at {VIEWPORT['width']} px: {overflowing}"
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert shot.stat().st_size > 10_000, "the screenshot is empty"

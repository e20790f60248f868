"""MkDocs hooks for the course book (mkdocs.yml, `make book`).

1. The pages are the committed notebooks where they live. mkdocs reads one docs_dir (book/, which holds only
   index.md, stylesheets/book.css and this file) and the site may not lie inside it, so the repository root
   cannot be the docs_dir: on_files adds the lessons (notebooks/NN_*.ipynb) and the projects
   (assignments/NAME/NAME.ipynb) from the repository root, before mkdocs-jupyter turns every .ipynb into a
   page. Nothing is copied into book/ or run, and the .py halves of the jupytext pairs are not read. A
   lesson's links to other lessons' .ipynb files are pointed at their pages.
2. The equations render without a network: MathJax 2 (the one nbconvert's pages expect, from the
   jupyter-server-mathjax package) is copied to assets/mathjax/, and each page's MathJax URL (MATHJAX in
   mkdocs.yml's custom_mathjax_url) becomes relative to that page, so the book also reads from file://.
3. The reader sees the code, not the test machinery: nbval's markers (`# NBVAL_CHECK_OUTPUT`, …) and
   nbgrader's hidden tests (`### BEGIN HIDDEN TESTS` … `### END HIDDEN TESTS`) are taken out of the code
   cells as the page is rendered (an nbconvert preprocessor, ReaderSource). The notebooks are not touched,
   and the .ipynb offered beside each page is the committed one. nbgrader's `### BEGIN SOLUTION` /
   `### END SOLUTION` stay: they show where the learner's code goes, as lesson 00 explains.
4. Each lesson's table of contents is made from its rendered headings (on_page_content), text and anchors.
   mkdocs-jupyter builds it from a Markdown copy of the notebook from which it deletes every `inline code`
   span, so "7. Exercise: `forward_with_cfg`, the guided forward pass" became "7. Exercise: , the guided
   forward pass", and its anchor (slugged from that shorter text) missed the heading's id.
"""
from __future__ import annotations

import posixpath
import re
import shutil
from html import escape
from pathlib import Path

from bs4 import BeautifulSoup  # a dependency of nbconvert, hence of mkdocs-jupyter
from markdown.extensions.toc import nest_toc_tokens
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File
from mkdocs.structure.toc import get_toc
from mkdocs.utils import get_relative_url
from nbconvert.preprocessors import Preprocessor

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("notebooks/[0-9][0-9]_*.ipynb", "assignments/*/*.ipynb")
NOTEBOOK_LINK = re.compile(r'href="([^":#?]+)\.ipynb(#[^"]*)?"')
MATHJAX_PLACEHOLDER = "MATHJAX/"
MATHJAX_DEST = "assets/mathjax"
# jupyter-server-mathjax ships only the STIX-Web fonts (MathJax's default is TeX): config=…,local/book loads this.
MATHJAX_LOCAL_CONFIG = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true}},
  SVG: {font: "STIX-Web"}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/book.js");
"""
# 3. Code-cell lines the book does not show. nbval takes any comment line "# NBVAL_…" for a marker; nbgrader's
# default delimiters of a hidden-tests block are "BEGIN HIDDEN TESTS" / "END HIDDEN TESTS" (used as "### …").
NBVAL_MARKER = re.compile(r"\s*#+\s*NBVAL_[A-Z_]+\s*$")
HIDDEN_TESTS_BEGIN = re.compile(r"\s*#+\s*BEGIN HIDDEN TESTS\s*$")
HIDDEN_TESTS_END = re.compile(r"\s*#+\s*END HIDDEN TESTS\s*$")
# 4. The headings of the lessons' own text (not any inside a cell's output), which the page's TOC lists.
HEADINGS = ", ".join(f".jp-MarkdownCell h{level}" for level in range(1, 7))


def book_notebooks(root: Path = ROOT) -> list[str]:
    """The notebooks the book renders, as paths relative to the repository root ('notebooks/01_….ipynb')."""
    return sorted(p.relative_to(root).as_posix() for pattern in PATTERNS for p in root.glob(pattern)
                  if ".ipynb_checkpoints" not in p.parts)


@event_priority(100)  # before mkdocs-jupyter's on_files (priority 0), which turns .ipynb files into pages
def on_files(files, config):
    for path in book_notebooks():
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_post_page(output, page, config):
    # A lesson's link to another lesson ("next: 01_forward_noising.ipynb") goes to that lesson's page; the
    # .ipynb itself also lies beside each page (include_source). Pages are NAME.html (use_directory_urls: false).
    here, notebooks = posixpath.dirname(page.file.src_uri), set(book_notebooks())

    def to_page(link: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(here, link[1] + ".ipynb"))
        return f'href="{link[1]}.html{link[2] or ""}"' if target in notebooks else link[0]

    output = NOTEBOOK_LINK.sub(to_page, output)
    return output.replace(MATHJAX_PLACEHOLDER, get_relative_url(MATHJAX_DEST, page.url) + "/")


def on_post_build(config):
    import jupyter_server_mathjax  # the book extra: pip install -e ".[book]"

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    dest = Path(config["site_dir"]) / MATHJAX_DEST
    shutil.copytree(static, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("localization"))  # English only
    (dest / "config" / "local").mkdir(exist_ok=True)
    (dest / "config" / "local" / "book.js").write_text(MATHJAX_LOCAL_CONFIG)


# 3. The reader sees the code, not the test machinery.

def reader_source(source: str) -> str:
    """A code cell's source as the book shows it: without nbval's marker lines and without nbgrader's hidden
    tests (from `### BEGIN HIDDEN TESTS` to `### END HIDDEN TESTS`, both lines included); unchanged otherwise."""
    lines, kept, hidden = source.splitlines(keepends=True), [], False
    for line in lines:
        if HIDDEN_TESTS_BEGIN.match(line):
            hidden = True
        elif HIDDEN_TESTS_END.match(line):
            hidden = False
        elif not hidden and not NBVAL_MARKER.match(line):
            kept.append(line)
    if len(kept) == len(lines):
        return source
    return "".join(kept).lstrip("\n").rstrip()  # no blank line left where a marker or a block ended the cell


class ReaderSource(Preprocessor):
    """nbconvert preprocessor: each code cell's source through reader_source. A cell that held nothing else and
    has no outputs is dropped (none today: the markers and hidden tests share their cells with the checks)."""

    def preprocess(self, nb, resources):
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "code":
                source = reader_source(cell.source)
                if source != cell.source and not source and not cell.get("outputs"):
                    continue
                cell.source = source
            cells.append(cell)
        nb.cells = cells
        return nb, resources


def on_config(config):
    # mkdocs-jupyter has no option to add an nbconvert preprocessor (its remove_tag_config removes whole cells,
    # inputs or outputs by cell tag, and these cells carry no tags), and a jupyter_nbconvert_config file would
    # also apply to `make notebooks` (nbconvert --inplace). Its nb2html builds the exporter from the module
    # global mkdocs_jupyter.nbconvert2.HTMLExporter, so that becomes a subclass that also runs ReaderSource.
    # It is rebuilt on the original class each time, as `mkdocs serve` reloads these hooks. (With
    # mkdocs-jupyter's cache on, a page cached without this hook would keep its markers; mkdocs.yml has it off.)
    from mkdocs_jupyter import nbconvert2

    original = getattr(nbconvert2, "_HTMLExporter_before_book_hooks", nbconvert2.HTMLExporter)
    nbconvert2._HTMLExporter_before_book_hooks = original

    class BookHTMLExporter(original):
        def _init_preprocessors(self):
            super()._init_preprocessors()
            self.register_preprocessor(ReaderSource, enabled=True)

    nbconvert2.HTMLExporter = BookHTMLExporter
    return config


# 4. The table of contents of a lesson, from its rendered headings.

def heading_text(heading) -> str:
    """A rendered heading's whole text, `inline code` included, without its '¶' anchor link, spaces collapsed."""
    return " ".join("".join(s for s in heading.strings if not s.find_parent("a", class_="anchor-link")).split())


def notebook_toc_tokens(html: str) -> list[dict]:
    """The Markdown cells' headings of a rendered notebook, nested by level as mkdocs' TOC expects; each links to
    the id nbconvert gave it, so the anchors match by construction (a heading without an id is left out)."""
    tokens = [{"level": int(h.name[1]), "id": h["id"], "name": escape(heading_text(h), quote=False)}
              for h in BeautifulSoup(html, "html.parser").select(HEADINGS) if h.get("id")]
    return nest_toc_tokens(tokens)


def on_page_content(html, page, config, files):
    # After mkdocs-jupyter's render (which set page.toc from its code-less Markdown copy), before the theme
    # draws the TOC and the search plugin indexes the page's sections.
    if page.file.src_uri.endswith(".ipynb"):
        page.toc = get_toc(notebook_toc_tokens(html))
    return html

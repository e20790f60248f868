"""MkDocs hooks for the course book (mkdocs.yml, `make book`).

1. The pages are the committed notebooks where they live. mkdocs reads one docs_dir (book/, which holds only
   index.md and this file) and the site may not lie inside it, so the repository root cannot be the docs_dir:
   on_files adds the lessons (notebooks/NN_*.ipynb) and the projects (assignments/NAME/NAME.ipynb) from the
   repository root, before mkdocs-jupyter turns every .ipynb into a page. Nothing is copied into book/ or run,
   and the .py halves of the jupytext pairs are not read. A lesson's links to other lessons' .ipynb files
   are pointed at their pages.
2. The equations render without a network: MathJax 2 (the one nbconvert's pages expect, from the
   jupyter-server-mathjax package) is copied to assets/mathjax/, and each page's MathJax URL (MATHJAX in
   mkdocs.yml's custom_mathjax_url) becomes relative to that page, so the book also reads from file://.
"""
from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

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

"""Structure every lesson promises: a jupytext pair in sync, objectives, an exercise with nbgrader
markers and its check, a hand derivation checked by an assert, committed outputs, a summary and what next."""
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells if c.source.strip()]


def test_there_are_lessons_and_each_has_its_py_twin():
    assert len(LESSONS) >= 6
    for nb in LESSONS:
        assert nb.with_suffix(".py").is_file(), f"{nb.name} has no paired .py (run `make sync`)"


@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.stem)
def test_pair_has_the_same_cells(nb):
    assert _cells(nb) == _cells(nb.with_suffix(".py")), f"{nb.name} and its .py differ: run `make sync`"


@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.stem)
def test_lesson_has_objectives_summary_next_and_committed_outputs(nb):
    notebook = jupytext.read(nb)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "objectives" in markdown.lower()
    assert "summary" in markdown.lower() and "next" in markdown.lower()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) // 2, f"{nb.name}: run `make notebooks` to store outputs"


@pytest.mark.parametrize("nb", [p for p in LESSONS if not p.stem.startswith("00_")], ids=lambda p: p.stem)
def test_lesson_has_a_checked_exercise_and_an_asserted_derivation(nb):
    code = "\n".join(c.source for c in jupytext.read(nb).cells if c.cell_type == "code")
    assert "### BEGIN SOLUTION" in code and "### END SOLUTION" in code
    assert "exercises.check_" in code
    assert "assert " in code
    assert "NBVAL_CHECK_OUTPUT" in code


def test_the_lab_file_browser_shows_the_lessons_in_order_and_nothing_else():
    """`make lab` starts JupyterLab with .jupyter-course/jupyter_server_config.py: the learner sees the twelve
    lessons, not their jupytext pairs, the test glue or caches."""
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(__file__).resolve().parents[1]
    assert "--config=.jupyter-course/jupyter_server_config.py notebooks/" in (root / "Makefile").read_text()
    config = PyFileConfigLoader("jupyter_server_config.py", path=str(root / ".jupyter-course")).load_config()
    manager = FileContentsManager(root_dir=str(root / "notebooks"), config=config)
    listed = sorted(item["name"] for item in manager.get("", content=True)["content"])
    lessons = sorted(p.name for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(lessons) == 12 and listed == lessons

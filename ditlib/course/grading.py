"""The nbgrader side of the course: the student release, and autograding submissions into a CSV.

* `build_release` (`python -m ditlib student-release`, the Makefile's `student`): every lesson
  notebooks/NN_*.ipynb with nbgrader cells, and every project assignments/NAME/NAME.ipynb, is an nbgrader
  assignment of the same name. `nbgrader generate_assignment` writes the student version to
  release/NAME/NAME.ipynb: solutions replaced by `raise NotImplementedError()`, hidden tests and outputs
  removed, every other cell as it was.
* `autograde` (`python -m ditlib autograde`, the Makefile's `autograde`): copies submitted notebooks into an
  nbgrader course folder, runs `nbgrader autograde` (which restores the locked check cells and the hidden
  tests) and writes one CSV row per student, assignment and graded cell: points, and one line of feedback
  (the check's friendly message, or the error's type and message).

The nbgrader course folder (build/classroom/ unless told otherwise) is scratch, rebuilt on every call;
after `autograde` it holds the executed notebooks under autograded/STUDENT/ASSIGNMENT/. The capstone's
own grader, which its graded cell calls, is `ditlib.course.capstone`.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..runtime import QUICK_ENV

NOTEBOOKS_DIR = Path("notebooks")          # lessons: notebooks/NN_name.ipynb
PROJECTS_DIR = Path("assignments")         # projects: assignments/NAME/NAME.ipynb (the capstone)
COURSE_DIR = Path("build") / "classroom"   # nbgrader's course folder (scratch)
CELL_TIMEOUT_S = 3600                      # per cell; nbgrader's default of 30 s is too short to train or sample
CSV_COLUMNS = ("student", "assignment", "exercise", "score", "max_score", "feedback")

#################################################################################
#                     Assignments: which notebooks, with which cells             #
#################################################################################


def _nbgrader_cells(path: Path) -> list[dict]:
    cells = json.loads(Path(path).read_text())["cells"]
    return [c for c in cells if "nbgrader" in c.get("metadata", {})]


def assignment_sources(notebooks_dir=NOTEBOOKS_DIR, projects_dir=PROJECTS_DIR, only=None) -> dict[str, Path]:
    """{assignment id: source notebook}: lessons with nbgrader cells, then projects; `only` picks some ids."""
    found = {nb.stem: nb for nb in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")) if _nbgrader_cells(nb)}
    found.update({nb.stem: nb for nb in sorted(Path(projects_dir).glob("*/*.ipynb"))
                  if nb.stem == nb.parent.name and _nbgrader_cells(nb)})
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ValueError(f"no assignment named {', '.join(unknown)}; the assignments are: {', '.join(found)}")
        found = {name: path for name, path in found.items() if name in only}
    return found


def unmarked_exercises(notebooks_dir=NOTEBOOKS_DIR) -> list[Path]:
    """Lessons with `### BEGIN SOLUTION` markers but no nbgrader metadata yet (so not assignments)."""
    def has_markers(nb: Path) -> bool:
        return any(c["cell_type"] == "code" and "### BEGIN SOLUTION" in "".join(c["source"])
                   for c in json.loads(nb.read_text())["cells"])
    return [nb for nb in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
            if has_markers(nb) and not _nbgrader_cells(nb)]


def points_table(sources: dict[str, Path]) -> list[tuple[str, str, float]]:
    """(assignment, grade_id, points) of every graded cell, in notebook order."""
    return [(name, cell["metadata"]["nbgrader"]["grade_id"], float(cell["metadata"]["nbgrader"]["points"]))
            for name, path in sources.items() for cell in _nbgrader_cells(path)
            if cell["metadata"]["nbgrader"].get("grade")]


#################################################################################
#                 The nbgrader course folder and the student release              #
#################################################################################

_CONFIG = """\
# Written by ditlib.course.grading; this folder is scratch and rebuilt on every call.
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "ditlib"
c.Execute.timeout = {timeout}
"""
_CONFIG_MARK = "# Written by ditlib."     # the first line above, and that of folders made by earlier versions


def _nbgrader(course_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS` in the course folder with this Python; its log is returned, not printed.

    This Python's bin/ goes first on PATH: nbgrader runs `alembic` from there to create its gradebook.
    """
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course_dir, env=env,
                          capture_output=True, text=True)


def _log_tail(proc: subprocess.CompletedProcess, lines: int = 15) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def prepare_course(sources: dict[str, Path], course_dir=COURSE_DIR) -> Path:
    """A fresh nbgrader course folder whose source/NAME/NAME.ipynb are the instructor notebooks, each run
    through `nbgrader generate_assignment` (which fills the gradebook and writes release/NAME/)."""
    import nbformat

    course_dir = Path(course_dir).resolve()
    config = course_dir / "nbgrader_config.py"
    if course_dir.exists() and any(course_dir.iterdir()):
        if not (config.is_file() and config.read_text().startswith(_CONFIG_MARK)):
            raise FileExistsError(f"{course_dir} is not empty and not a course folder made by ditlib: "
                                  "refusing to delete it; pass another --course-dir")
        shutil.rmtree(course_dir)
    course_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(_CONFIG.format(root=str(course_dir), timeout=CELL_TIMEOUT_S))
    for name, path in sources.items():
        nb = nbformat.read(path, as_version=4)
        for key in ("jupytext", "widgets"):        # no .py pairing, no widget state of the instructor's run
            nb.metadata.pop(key, None)
        for cell in nb.cells:
            cell.metadata.pop("execution", None)   # the instructor's run times
        dest = course_dir / "source" / name / f"{name}.ipynb"
        dest.parent.mkdir(parents=True)
        nbformat.write(nb, dest)                   # only the notebook: no .py pair, no checkpoints beside it
    proc = _nbgrader(course_dir, "generate_assignment", "*", "--force")     # every assignment in source/
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{_log_tail(proc)}")
    return course_dir


def build_release(out="release", sources: dict[str, Path] | None = None, course_dir=COURSE_DIR) -> list[Path]:
    """Write the student version of every assignment to OUT/NAME/NAME.ipynb; returns the notebooks written."""
    sources = assignment_sources() if sources is None else sources
    course = prepare_course(sources, course_dir)
    out = Path(out)
    written = []
    for name in sources:
        if (out / name).exists():
            shutil.rmtree(out / name)
        shutil.copytree(course / "release" / name, out / name)
        written += sorted((out / name).glob("*.ipynb"))
    return written


#################################################################################
#                       Autograding submissions into a CSV                      #
#################################################################################

def collect_submissions(submissions, assignments) -> dict[tuple[str, str], Path]:
    """{(student, assignment): notebook} from SUBMISSIONS/STUDENT/**/ASSIGNMENT.ipynb.

    The student is the first folder under SUBMISSIONS, so both nbgrader's layout
    (STUDENT/ASSIGNMENT/ASSIGNMENT.ipynb) and one flat folder per student work.
    """
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"no folder {submissions} of submissions")
    found = {}
    for nb in sorted(submissions.rglob("*.ipynb")):
        rel = nb.relative_to(submissions)
        if ".ipynb_checkpoints" in rel.parts or nb.stem not in assignments:
            continue
        if len(rel.parts) < 2:
            raise ValueError(f"{nb} is not inside a student's folder: use {submissions}/STUDENT/{nb.name}")
        key = (rel.parts[0], nb.stem)
        if key in found:
            raise ValueError(f"two submissions of {nb.stem} by {rel.parts[0]}: {found[key]} and {nb}")
        found[key] = nb
    return found


def _text(output) -> str:
    data = output.get("data", {}).get("text/plain", "")
    return "".join(data) if isinstance(data, list) else data


def _check_message(text: str) -> tuple[bool, str] | None:
    """(passed, the check's message) from a displayed Feedback ("✓ name: Correct: …" / "✗ name: message")."""
    if text[:2] not in ("✓ ", "✗ ") or ": " not in text:
        return None
    passed, message = text.startswith("✓"), text[2:].split(": ", 1)[1].strip()
    return passed, ("✓ " + message if passed and not message.startswith("✓") else message)


def cell_feedback(cell) -> str:
    """One line for a graded cell of an autograded notebook: the check's message, else the error."""
    checks = [m for o in cell.get("outputs", []) if o["output_type"] in ("display_data", "execute_result")
              for m in [_check_message(_text(o))] if m]
    errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
    failed = [message for passed, message in checks if not passed]
    if failed:
        return failed[0]
    if errors:
        evalue = errors[0].get("evalue", "").strip().splitlines()
        return f"{errors[0]['ename']}: {evalue[0] if evalue else ''}".rstrip(": ")
    stderr = [o for o in cell.get("outputs", []) if o["output_type"] == "stream" and o.get("name") == "stderr"]
    if stderr:   # nbgrader gives no points to a cell that wrote to stderr
        return "the cell wrote to stderr (nbgrader counts that as a failure): " + stderr[0]["text"].strip()[:200]
    return checks[0][1] if checks else "passed"


def _grades(course_dir: Path, student: str, assignment: str) -> list[dict]:
    """CSV rows of one autograded notebook, in cell order."""
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    graded = course_dir / "autograded" / student / assignment / f"{assignment}.ipynb"
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}", "ditlib") as gb:
        try:
            scores = {g.name: (g.score, g.max_score)
                      for g in gb.find_submission_notebook(assignment, assignment, student).grades}
        except MissingEntry:
            scores = {}
        maximum = {c.name: c.max_score for c in gb.find_notebook(assignment, assignment).grade_cells}
    cells = nbformat.read(graded, as_version=4).cells if graded.exists() else []
    feedback = {c.metadata.nbgrader["grade_id"]: cell_feedback(c) for c in cells
                if c.metadata.get("nbgrader", {}).get("grade")}
    order = list(feedback) + [name for name in maximum if name not in feedback]
    return [{"student": student, "assignment": assignment, "exercise": name,
             "score": scores.get(name, (0.0, None))[0] or 0.0, "max_score": maximum[name],
             "feedback": feedback.get(name, "nbgrader could not autograde this notebook")} for name in order]


def autograde(submissions, out="grades.csv", sources: dict[str, Path] | None = None, course_dir=COURSE_DIR,
              mode: str = "auto", log=print) -> list[dict]:
    """Grade every submitted notebook with `nbgrader autograde`; write and return the CSV rows.

    mode "auto" runs lessons in quick mode (their checks are identical, the runs shorter) and projects
    in full mode (the capstone's thresholds are stated for it); "quick" and "full" run everything so.
    A student who submitted some assignments but not others gets 0 on the missing ones.
    """
    if mode not in ("auto", "quick", "full"):
        raise ValueError(f"mode must be 'auto', 'quick' or 'full', got {mode!r}")
    sources = assignment_sources() if sources is None else sources
    found = collect_submissions(submissions, sources)
    if not found:
        raise ValueError(f"no submitted notebook in {submissions} is named after an assignment "
                         f"({', '.join(f'{n}.ipynb' for n in sources)})")
    course = prepare_course({a: p for a, p in sources.items() if a in {a for _, a in found}}, course_dir)
    for (student, assignment), nb in found.items():
        dest = course / "submitted" / student / assignment
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(nb, dest / f"{assignment}.ipynb")
        for extra in nb.parent.iterdir():           # e.g. the capstone's checkpoint files
            if extra.is_file() and extra.suffix != ".ipynb":
                shutil.copyfile(extra, dest / extra.name)
    students = sorted({s for s, _ in found})
    submitted = list(dict.fromkeys(a for _, a in found))
    in_quick_mode = {a: mode == "quick" or (mode == "auto" and is_lesson(sources[a])) for a in submitted}
    for quick in (True, False):
        group = [a for a in submitted if in_quick_mode[a] == quick]
        if not group:
            continue
        env = {k: v for k, v in os.environ.items() if k != QUICK_ENV} | ({QUICK_ENV: "1"} if quick else {})
        start = time.perf_counter()
        for assignment in (["*"] if len(group) == len(submitted) else group):     # one nbgrader run if it can
            proc = _nbgrader(course, "autograde", assignment, "--force", env=env)
            if proc.returncode != 0:
                log(f"nbgrader autograde {assignment} reported errors:\n{_log_tail(proc)}")
        log(f"autograded {', '.join(group)} ({'quick' if quick else 'full'} mode) in {time.perf_counter() - start:.0f} s")
    rows = []
    for assignment in submitted:
        for student in students:
            if (student, assignment) in found:
                rows += _grades(course, student, assignment)
            else:
                rows += [{"student": student, "assignment": assignment, "exercise": grade_id, "score": 0.0,
                          "max_score": points, "feedback": "not submitted"}
                         for _, grade_id, points in points_table({assignment: sources[assignment]})]
    rows.sort(key=lambda r: (r["student"], list(sources).index(r["assignment"])))
    write_csv(rows, out)
    return rows


def is_lesson(path: Path) -> bool:
    """A lesson (notebooks/NN_name.ipynb) rather than a project (assignments/NAME/NAME.ipynb)."""
    return path.parent.name != path.stem      # lessons sit flat in notebooks/; projects in a folder of their name


def write_csv(rows: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": f"{row['score']:g}", "max_score": f"{row['max_score']:g}"})
    return path


def totals(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """{student: (score, max_score)} over all rows."""
    out: dict[str, tuple[float, float]] = {}
    for r in rows:
        score, maximum = out.get(r["student"], (0.0, 0.0))
        out[r["student"]] = (score + float(r["score"]), maximum + float(r["max_score"]))
    return out

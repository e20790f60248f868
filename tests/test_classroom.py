"""Specification of the classroom: nbgrader builds a student release that keeps every cell but the solutions
and hidden tests, autograding gives the instructor notebooks full marks and the untouched release zero with
the checks' friendly messages, and the capstone grader tells a trained DiT from an untrained one.

Autograding executes notebooks, so these tests take a subset in quick mode: lesson 05 (two exercises, one
of the shortest runs) and the capstone; `make student` and `make autograde` run the same code on every
assignment.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import torch

from ditlib.checkpoints import save_checkpoint
from ditlib.configs import get_config
from ditlib.course import capstone, cli, grading
from ditlib.data import DATA_DIR
from ditlib.models import DiT, build_model
from ditlib.runtime import QUICK_ENV

REPO = Path(__file__).resolve().parent.parent
SUBSET = ("05_vit_patchify", "capstone")
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


@pytest.fixture(scope="module")
def sources() -> dict[str, Path]:
    return grading.assignment_sources(REPO / "notebooks", REPO / "assignments")


@pytest.fixture(scope="module")
def release(sources, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("release")
    grading.build_release(tmp / "release", sources, course_dir=tmp / "course")
    return tmp / "release"


def _regions(source: str) -> tuple[list[str], list[str]]:
    """(lines inside solution or hidden-test regions, lines outside them) of one cell."""
    inside, outside, depth = [], [], 0
    for line in source.splitlines():
        if line.strip().startswith(("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")):
            depth += 1
        elif line.strip().startswith(("### END SOLUTION", "### END HIDDEN TESTS")):
            depth -= 1
        elif line.strip():
            (inside if depth else outside).append(line.strip())
    return inside, outside


def _shipped_as_capstone(dest: Path, name: str = "fmnist-latent-DiT-T-2") -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(DATA_DIR / "checkpoints" / f"{name}{suffix}", dest / f"capstone{suffix}")


def _untrained_checkpoint(stem: Path, config_name: str = "fmnist-latent-DiT-T/2") -> Path:
    config = get_config(config_name)
    torch.manual_seed(0)
    model = DiT(config.dit_config())
    return save_checkpoint(stem, {f"ema.{k}": v for k, v in model.state_dict().items()},
                           {"kind": "weights", "step": 0, "train_config": config.to_dict(),
                            "model_config": model.config.to_dict(), "elapsed_s": 0.0})


# ----------------------------------------------------------------------------- assignments and release
def test_every_lesson_with_nbgrader_cells_and_the_capstone_are_assignments(sources):
    assert set(SUBSET) <= set(sources)
    assert "00_welcome" not in sources                            # no exercise, no assignment
    for name, path in sources.items():
        assert path.stem == name


def test_release_holds_one_notebook_per_assignment_and_no_py_pair(release, sources):
    assert sorted(p.name for p in release.iterdir()) == sorted(sources)
    for name in sources:
        assert [p.name for p in (release / name).iterdir()] == [f"{name}.ipynb"]
    assert not list(release.rglob("*.py"))


def test_release_has_no_solution_and_no_hidden_test(release, sources):
    for name, path in sources.items():
        source_cells = nbformat.read(path, as_version=4).cells
        hidden, visible = set(), set()
        for cell in source_cells:
            inside, outside = _regions(cell.source)
            hidden.update(inside)
            visible.update(outside)
        secret = hidden - visible                                  # lines that only a solution or hidden test has
        assert secret, f"{name} has no solution or hidden test"
        released = nbformat.read(release / name / f"{name}.ipynb", as_version=4)
        text = "\n".join(cell.source for cell in released.cells)
        for marker in MARKERS:
            assert marker not in text, f"{marker} survived in the release of {name}"
        released_lines = {line.strip() for line in text.splitlines()}
        assert not secret & released_lines, f"solution or hidden-test lines survived in {name}"
        assert all(not cell.get("outputs") for cell in released.cells), f"outputs survived in {name}"
        assert "jupytext" not in released.metadata


def test_release_keeps_every_other_cell_and_locks_the_checks(release, sources):
    for name, path in sources.items():
        source_cells = nbformat.read(path, as_version=4).cells
        released = nbformat.read(release / name / f"{name}.ipynb", as_version=4).cells
        assert [c.cell_type for c in released] == [c.cell_type for c in source_cells]
        for src, rel in zip(source_cells, released):
            meta = src.metadata.get("nbgrader", {})
            if meta.get("solution"):
                assert "raise NotImplementedError()" in rel.source
            elif meta.get("grade"):
                assert rel.metadata["nbgrader"]["locked"] and rel.metadata["editable"] is False
                assert rel.source == "\n".join(_regions_kept(src.source))
            else:
                assert rel.source == src.source


def _regions_kept(source: str) -> list[str]:
    kept, depth = [], 0
    for line in source.splitlines():
        if line.strip().startswith("### BEGIN HIDDEN TESTS"):
            depth += 1
        elif line.strip().startswith("### END HIDDEN TESTS"):
            depth -= 1
        elif not depth:
            kept.append(line)
    return kept


def test_every_graded_exercise_has_a_visible_check_and_hidden_tests(sources):
    for name, path in sources.items():
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and name != "capstone":           # the capstone's grade is its visible FID
                where = f"{name}, cell {meta['grade_id']}"
                assert re.search(r"exercises\.check_\w+\(", cell.source) and "display(feedback)" in cell.source, \
                    f"{where}: the visible check should be `feedback = exercises.check_NAME(NAME)` + `display(feedback)`"
                assert "### BEGIN HIDDEN TESTS" in cell.source and "exercises.require(feedback)" in cell.source, \
                    f"{where}: no hidden tests (`### BEGIN HIDDEN TESTS` + `exercises.require(feedback)` + an extra assert)"
                assert meta["points"] > 0 and meta["locked"], f"{where}: a graded cell needs points and a lock"


def test_instructors_guide_lists_the_points_of_every_exercise(sources):
    guide = (REPO / "INSTRUCTORS.md").read_text()
    for assignment, grade_id, points in grading.points_table(sources):
        assert re.search(rf"\|\s*{re.escape(assignment)}\s*\|\s*`{re.escape(grade_id)}`\s*\|\s*{points:g}\s*\|", guide), \
            f"INSTRUCTORS.md has no row | {assignment} | `{grade_id}` | {points:g} |"


def test_instructors_guide_states_the_point_totals_the_notebooks_give(sources):
    rows = [(int(a[:2]), points) for a, _, points in grading.points_table(sources) if a != "capstone"]
    first, second = (sum(p for n, p in rows if n <= 5), sum(p for n, p in rows if n > 5))
    line = f"Lessons: {first + second:g} points (00 has no exercise; 01–05: {first:g}, 06–11: {second:g})"
    assert line in (REPO / "INSTRUCTORS.md").read_text(), f"INSTRUCTORS.md should say: {line}"


# ----------------------------------------------------------------------------- autograding
@pytest.fixture(scope="module")
def graded(sources, release, tmp_path_factory) -> list[dict]:
    """Autograde two students in quick mode: 'instructor' submits the source notebooks (and the shipped
    latent DiT as capstone checkpoint), 'untouched' submits the release as it was handed out."""
    tmp = tmp_path_factory.mktemp("autograde")
    subset = {name: sources[name] for name in SUBSET}
    for name, path in subset.items():
        mine = tmp / "submissions" / "instructor" / name
        mine.mkdir(parents=True)
        shutil.copyfile(path, mine / path.name)
        blank = tmp / "submissions" / "untouched"                    # the flat layout: one folder per student
        blank.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(release / name / f"{name}.ipynb", blank / f"{name}.ipynb")
    _shipped_as_capstone(tmp / "submissions" / "instructor" / "capstone")
    csv_path = tmp / "grades.csv"
    grading.autograde(tmp / "submissions", csv_path, subset, course_dir=tmp / "course", mode="quick",
                      log=lambda message: None)
    with csv_path.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == grading.CSV_COLUMNS
        return list(reader)


def test_autograding_the_instructor_notebooks_gives_full_marks_and_the_default_capstone_8(graded, sources):
    rows = [r for r in graded if r["student"] == "instructor"]
    expected = [(a, g, p) for a, g, p in grading.points_table(sources) if a in SUBSET]
    assert [(r["assignment"], r["exercise"], float(r["max_score"])) for r in rows] == expected
    for r in rows:
        if r["exercise"] == "fid":
            assert float(r["score"]) == 8 and float(r["max_score"]) == 10, r
        else:
            assert float(r["score"]) == float(r["max_score"]), r
    feedback = {r["exercise"]: r["feedback"] for r in rows}
    assert feedback["check_patchify"].startswith("✓ Correct: patchify matches")
    assert feedback["check_sincos_1d"].startswith("✓ Correct: sincos_1d matches")
    # the capstone's checkpoint is the shipped default: 8 of 10 points, full marks need more than the default
    assert re.match(r"✓ FID-FMNIST \d+\.\d+ .* 8/10 points", feedback["fid"]), feedback["fid"]


def test_autograding_the_untouched_release_gives_zero_with_friendly_feedback(graded):
    rows = {r["exercise"]: r for r in graded if r["student"] == "untouched"}
    assert set(rows) == {"check_patchify", "check_multi_head_attention", "check_sincos_1d", "fid"}   # all graded: no crash
    assert all(float(r["score"]) == 0 for r in rows.values())
    for exercise in ("check_patchify", "check_multi_head_attention", "check_sincos_1d"):
        assert rows[exercise]["feedback"].startswith("This function is not implemented yet")   # the check's sentence
    assert rows["fid"]["feedback"].startswith("CheckpointError: no checkpoint at capstone")   # error type: message


def test_cell_feedback_prefers_the_checks_message_then_the_error():
    fail = nbformat.v4.new_output("display_data", data={"text/plain": "✗ q_sample: Forgot the square root."})
    error = nbformat.v4.new_output("error", ename="AssertionError", evalue="Forgot the square root.", traceback=[])
    assert grading.cell_feedback({"outputs": [fail, error]}) == "Forgot the square root."
    other = nbformat.v4.new_output("error", ename="NameError", evalue="name 'q_sample' is not defined", traceback=[])
    assert grading.cell_feedback({"outputs": [other]}) == "NameError: name 'q_sample' is not defined"
    passed = nbformat.v4.new_output("display_data", data={"text/plain": "✓ q_sample: Correct: fine."})
    assert grading.cell_feedback({"outputs": [passed]}) == "✓ Correct: fine."


def test_submissions_outside_a_student_folder_are_refused(tmp_path, sources):
    (tmp_path / "01_forward_noising.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="not inside a student's folder"):
        grading.collect_submissions(tmp_path, sources)


# ----------------------------------------------------------------------------- the capstone's grader
def test_capstone_grader_gives_an_untrained_dit_zero_through_the_cli(tmp_path, monkeypatch, capsys):
    """The shipped latent DiT earns 8/10 above (through autograde); the same architecture untrained earns 0."""
    from ditlib.__main__ import main

    monkeypatch.setenv(QUICK_ENV, "1")
    stem = _untrained_checkpoint(tmp_path / "untrained")
    assert main(["grade-capstone", "--ckpt", str(stem), "--out", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quick"] and report["points"] == 0 and report["max_points"] == 10
    assert report["fid"] > max(quick for (_, quick), _ in capstone.CAPSTONE_BANDS)
    assert "✗ capstone: FID-FMNIST" in capsys.readouterr().out


def test_capstone_grader_gives_zero_over_the_compute_budget_without_sampling(tmp_path):
    stem = _untrained_checkpoint(tmp_path / "greedy", "fmnist-DiT-T/4")
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["step"] = 10_000                                         # 0.18 Gflops × 64 × 10k × 3 = 349 Tflops
    stem.with_suffix(".json").write_text(json.dumps(meta))
    report = capstone.grade_capstone(stem)
    assert report.points == 0 and report.fid is None and not report.within_budget
    assert "over the budget" in report.message and report.training_tflops > capstone.CAPSTONE_BUDGET_TFLOPS


def test_capstone_bands_are_stated_in_the_assignment():
    text = (REPO / "assignments" / "capstone" / "capstone.py").read_text()
    assert f"Budget: {capstone.CAPSTONE_BUDGET_TFLOPS:g} Tflops" in text
    for (full, _), points in capstone.CAPSTONE_BANDS:
        assert re.search(rf"\| {full:g} \| \+{points} \|", text), f"the capstone does not state FID ≤ {full:g}: +{points}"
    assert "1,000 samples" in text and "50 DDIM steps" in text
    assert capstone.capstone_settings()["num_samples"] in (100, 1000)


def test_capstone_bands_score_the_calibration_models_as_stated(monkeypatch):
    # the grader's FIDs of the calibration models (INSTRUCTORS.md section 4), full | quick
    monkeypatch.delenv(QUICK_ENV, raising=False)                  # full mode: what the thresholds are stated for
    assert capstone.capstone_points(2.98) == 10                   # the default's recipe with DiT-M/2, 121 Tflops
    assert capstone.capstone_points(3.65) == 8                    # the shipped default, unchanged: not full marks
    assert capstone.capstone_points(6.71) == 6                    # the shipped default without guidance
    assert capstone.capstone_points(17.3) == 4                    # shipped pixel fmnist-DiT-T/4
    assert capstone.capstone_points(58.5) == 0                    # untrained latent DiT-T/2
    monkeypatch.setenv(QUICK_ENV, "1")                            # quick mode: the tests' smaller evaluation
    assert [capstone.capstone_points(fid) for fid in (7.81, 8.40, 10.97, 21.3, 67.6)] == [8, 8, 6, 4, 0]


def test_autograde_runs_lessons_in_quick_mode_and_projects_in_full_mode(sources):
    assert all(grading.is_lesson(path) for name, path in sources.items() if name != "capstone")
    assert not grading.is_lesson(sources["capstone"])


def test_the_scratch_course_folder_is_never_a_folder_of_someone_elses(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing to delete"):
        grading.prepare_course({}, tmp_path)
    assert (tmp_path / "thesis.tex").exists()


# ----------------------------------------------------------------------------- the commands
def _course_parser() -> tuple[argparse.ArgumentParser, argparse.Action]:
    """A fresh parser with only the course's commands, as `python -m ditlib` adds them; and its subparsers."""
    parser = argparse.ArgumentParser(prog="python -m ditlib")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli.add_commands(subparsers)
    return parser, subparsers


def test_the_course_adds_its_three_commands_through_the_entry_point():
    from importlib.metadata import entry_points

    assert [ep.load() for ep in entry_points(group="ditlib.commands") if ep.name == "course"] == [cli.add_commands]
    parser, subparsers = _course_parser()
    assert set(subparsers.choices) == {"student-release", "autograde", "grade-capstone"}
    args = parser.parse_args(["student-release"])
    assert (args.out, args.points, args.only, args.course_dir) == ("release", False, None, str(grading.COURSE_DIR))
    assert (args.notebooks, args.projects) == (str(grading.NOTEBOOKS_DIR), str(grading.PROJECTS_DIR))
    args = parser.parse_args(["autograde", "--submissions", "subs", "--only", "05_vit_patchify", "capstone"])
    assert (args.submissions, args.out, args.mode) == ("subs", "grades.csv", "auto")
    assert args.only == ["05_vit_patchify", "capstone"]
    with pytest.raises(SystemExit):
        parser.parse_args(["autograde", "--submissions", "subs", "--mode", "fast"])
    args = parser.parse_args(["grade-capstone", "--ckpt", "capstone", "--device", "cpu"])
    assert (args.ckpt, args.out, args.device) == ("capstone", None, "cpu")
    assert all(callable(parser.parse_args(argv).func) for argv in
               (["student-release"], ["autograde", "--submissions", "s"], ["grade-capstone", "--ckpt", "c"]))


def test_student_release_points_prints_the_rows_of_the_instructors_table(sources, capsys):
    args = _course_parser()[0].parse_args(["student-release", "--points", "--notebooks", str(REPO / "notebooks"),
                                           "--projects", str(REPO / "assignments")])
    assert args.func(args) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows == [f"| {a} | `{g}` | {p:g} | |" for a, g, p in grading.points_table(sources)]

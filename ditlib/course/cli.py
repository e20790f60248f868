"""The course's commands of `python -m ditlib`: `student-release`, `autograde` and `grade-capstone`.

The core finds `add_commands` through the `ditlib.commands` entry point (pyproject.toml), so it never
imports this package itself; the Makefile's `student` and `autograde` run the first two.
"""
from __future__ import annotations

import json
from pathlib import Path

from .capstone import capstone_rubric, grade_capstone
from .grading import (COURSE_DIR, CSV_COLUMNS, NOTEBOOKS_DIR, PROJECTS_DIR, assignment_sources, autograde,
                      build_release, points_table, totals, unmarked_exercises)


def _sources(args) -> dict[str, Path]:
    return assignment_sources(args.notebooks, args.projects, only=args.only)


def _cmd_student_release(args) -> int:
    sources = _sources(args)
    if args.points:                        # the rows of INSTRUCTORS.md's points table
        for assignment, grade_id, points in points_table(sources):
            print(f"| {assignment} | `{grade_id}` | {points:g} | |")
        return 0
    for nb in unmarked_exercises(args.notebooks):
        print(f"note: {nb} has solution markers but no nbgrader metadata, so it is not an assignment yet")
    written = build_release(args.out, sources, args.course_dir)
    for nb in written:
        print(f"wrote {nb}")
    print(f"{len(sources)} assignment(s) in {args.out}/ ({sum(p for *_, p in points_table(sources)):g} points)")
    return 0


def _cmd_autograde(args) -> int:
    rows = autograde(args.submissions, args.out, _sources(args), args.course_dir, mode=args.mode)
    for student, (score, maximum) in totals(rows).items():
        print(f"  {student:<24} {score:g} / {maximum:g}")
    print(f"wrote {args.out} ({len(rows)} rows: {', '.join(CSV_COLUMNS)}); "
          f"executed notebooks in {Path(args.course_dir) / 'autograded'}")
    return 0


def _cmd_grade_capstone(args) -> int:
    report = grade_capstone(args.ckpt, device=args.device)
    print(capstone_rubric())
    print(repr(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def add_commands(subparsers) -> None:
    """Register `student-release`, `autograde` and `grade-capstone` with `python -m ditlib`."""
    def common(p):
        p.add_argument("--only", nargs="*", default=None, help="these assignment ids (default: all)")
        p.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help="the lessons' folder (default notebooks)")
        p.add_argument("--projects", default=str(PROJECTS_DIR), help="the projects' folder (default assignments)")
        p.add_argument("--course-dir", default=str(COURSE_DIR), help="nbgrader's scratch course folder")

    p = subparsers.add_parser("student-release", help="build the students' notebooks with nbgrader (make student)")
    p.add_argument("--out", default="release", help="output folder (default release)")
    p.add_argument("--points", action="store_true", help="only print the points of every graded cell (markdown rows)")
    common(p)
    p.set_defaults(func=_cmd_student_release)

    p = subparsers.add_parser("autograde", help="grade submitted notebooks with nbgrader into a CSV (make autograde)")
    p.add_argument("--submissions", required=True, help="SUBMISSIONS/STUDENT/[ASSIGNMENT/]ASSIGNMENT.ipynb")
    p.add_argument("--out", default="grades.csv", help="the CSV to write (default grades.csv)")
    p.add_argument("--mode", choices=["auto", "quick", "full"], default="auto",
                   help="auto: lessons in quick mode, projects (the capstone) in full mode")
    common(p)
    p.set_defaults(func=_cmd_autograde)

    p = subparsers.add_parser("grade-capstone", help="FID-FMNIST of a capstone checkpoint and its points")
    p.add_argument("--ckpt", required=True, help="the submitted checkpoint (STEM, STEM.json or STEM.safetensors)")
    p.add_argument("--out", default=None, help="also write the report as JSON here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_grade_capstone)

"""The classroom: nbgrader assignments from the lessons, autograding into a CSV, and the capstone's grader.

Three jobs, each a function and a `python -m ditlib` command (the Makefile's `student` and `autograde`):

* `build_release` (`student-release`): every lesson notebooks/NN_*.ipynb with nbgrader cells, and every
  project assignments/NAME/NAME.ipynb, is an nbgrader assignment of the same name. `nbgrader
  generate_assignment` writes the student version to release/NAME/NAME.ipynb: solutions replaced by
  `raise NotImplementedError()`, hidden tests and outputs removed, every other cell as it was.
* `autograde` (`autograde`): copies submitted notebooks into an nbgrader course folder, runs `nbgrader
  autograde` (which restores the locked check cells and the hidden tests) and writes one CSV row per
  student, assignment and graded cell: points, and one line of feedback (the check's friendly message,
  or the error's type and message).
* `grade_capstone` (`grade-capstone`): samples a submitted DiT, computes FID-FMNIST with
  `ditlib.evaluate` and awards points by the thresholds of `CAPSTONE_BANDS`, within the training-compute
  budget `CAPSTONE_BUDGET_TFLOPS` (DiT §4, Figure 9: Gflops × batch × steps × 3).

The nbgrader course folder (build/classroom/ unless told otherwise) is scratch, rebuilt on every call;
after `autograde` it holds the executed notebooks under autograded/STUDENT/ASSIGNMENT/.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .runtime import QUICK_ENV, pick, quick_mode

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
# Written by ditlib.classroom; this folder is scratch and rebuilt on every call.
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "ditlib"
c.Execute.timeout = {timeout}
"""


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
        if not (config.is_file() and config.read_text().startswith(_CONFIG.splitlines()[0])):
            raise FileExistsError(f"{course_dir} is not empty and not a course folder made by ditlib.classroom: "
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
    in_quick_mode = {a: mode == "quick" or (mode == "auto" and _is_lesson(sources[a])) for a in submitted}
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


def _is_lesson(path: Path) -> bool:
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


#################################################################################
#                            The capstone's grader                              #
#################################################################################

CAPSTONE_BUDGET_TFLOPS = 150.0
"""Training compute allowed, in Tflops by the paper's convention (§4, Figure 9): Gflops of one forward
pass × batch size × steps × 3. The shipped pixel model fmnist-DiT-T/4 used 121 (26 min on 2 CPU cores),
the course's default fmnist-latent-DiT-T/2 52 (6000 steps; 11 min of fp32 training on 2 cores, plus encoding
the latent cache once, not counted)."""

CAPSTONE_BANDS = (
    # ((FID-FMNIST at most in full mode, in quick mode), points); the points add up. Calibration, full | quick:
    # untrained latent DiT-T/2 55.1 | 63.9, untrained pixel DiT-T/4 140.0 | 138.4,
    # shipped pixel fmnist-DiT-T/4 17.3 | 21.3, shipped latent fmnist-latent-DiT-T/2 10.7 | 15.8 (before issue 13).
    # Re-measured 2026-12-01 with the issue-13 VAE and default: untrained latent 58.5 | 67.6, shipped default
    # fmnist-latent-DiT-T/2 4.83 | 10.0 (52 Tflops) -> full marks; the bands were left as they were.
    ((40.0, 48.0), 2),      # it learned something: even an untrained latent DiT scores 55 (the VAE draws blobs)
    ((25.0, 32.0), 3),      # a working DiT
    ((20.0, 26.0), 3),      # as good as the shipped pixel model (121 Tflops)
    ((12.0, 18.0), 2),      # as good as the shipped latent model (30 Tflops)
)
"""Calibrated against the shipped checkpoints and an untrained DiT; see INSTRUCTORS.md for the numbers."""


def capstone_settings() -> dict:
    """How the grader samples: full mode is what the thresholds are stated for; quick mode is for tests."""
    return dict(num_samples=pick(1000, 100), num_sampling_steps=pick(50, 10), sampler="ddim", seed=0,
                precision="auto", batch_size=256, num_reference=pick(10_000, 2_000))


def capstone_bands() -> list[tuple[float, int]]:
    """[(FID threshold, points)] for the current mode, loosest first."""
    return [(pick(*thresholds), points) for thresholds, points in CAPSTONE_BANDS]


def capstone_points(fid: float) -> int:
    return sum(points for threshold, points in capstone_bands() if fid <= threshold)


def capstone_rubric() -> str:
    """The rubric as text: budget, sampling settings and the bands of the current mode."""
    s = capstone_settings()
    lines = [f"budget: at most {CAPSTONE_BUDGET_TFLOPS:g} Tflops of training compute (Gflops × batch × steps × 3)",
             f"evaluation: FID-FMNIST of {s['num_samples']} samples, {s['num_sampling_steps']} DDIM steps, "
             f"your checkpoint's guidance scale, against {s['num_reference']} test images"
             + (" [quick mode: thresholds for the smaller evaluation]" if quick_mode() else "")]
    lines += [f"  FID ≤ {threshold:g}: +{points} points" for threshold, points in capstone_bands()]
    lines.append(f"  maximum: {sum(p for _, p in CAPSTONE_BANDS)} points")
    return "\n".join(lines)


def training_tflops(gflops_per_forward: float, batch_size: int, steps: int) -> float:
    """Training compute as the paper counts it (§4, Figure 9): Gflops × batch size × steps × 3, in Tflops."""
    return 3.0 * gflops_per_forward * batch_size * steps / 1000.0


def planned_tflops(config) -> float:
    """Training compute a TrainConfig will use if it runs `max_steps` (the model is built on the meta device)."""
    import torch

    from .flops import gflops
    from .models import build_model

    with torch.device("meta"):
        model = build_model(config.model, **config.model_kwargs())
    return training_tflops(gflops(model), config.batch_size, config.max_steps)


@dataclass(frozen=True)
class CapstoneReport:
    """What `grade_capstone` found; `points` is the score, `message` says why in one line."""
    checkpoint: str
    model: str
    block: str
    latent: bool
    parameters: int
    gflops: float
    training_tflops: float
    within_budget: bool
    cfg_scale: float
    num_samples: int
    num_sampling_steps: int
    quick: bool
    fid: float | None
    points: int
    max_points: int
    seconds: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        return f"{'✓' if self.points else '✗'} capstone: {self.message}"

    def _repr_html_(self) -> str:
        import html

        color, background = ("#1b5e20", "#e8f5e9") if self.points else ("#b71c1c", "#fdecea")
        return (f'<div style="border-left:4px solid {color};background:{background};color:{color};'
                f'padding:6px 10px;margin:4px 0;font-family:sans-serif">'
                f'<b>{"✓" if self.points else "✗"} capstone: {self.points}/{self.max_points} points</b>: '
                f'{html.escape(self.message)}</div>')


def _reference(num_reference: int):
    """"fmnist-test" (all 10k test images, as `python -m ditlib fid` uses), or its first N as uint8 N×H×W×1."""
    from .data import FashionMNIST

    if num_reference >= 10_000:
        return "fmnist-test"
    return FashionMNIST("test").images[:num_reference].permute(0, 2, 3, 1)


def grade_capstone(checkpoint, device=None) -> CapstoneReport:
    """Sample a capstone checkpoint, compute FID-FMNIST and award points by `CAPSTONE_BANDS`.

    checkpoint: a ditlib checkpoint (STEM, STEM.json or STEM.safetensors, e.g. the `export_run` of your run)
    or a shipped name. It must be a class-conditional Fashion-MNIST DiT (pixels or latents of a ditlib VAE).
    Sampling follows `python -m ditlib fid` with `capstone_settings()` and the checkpoint's guidance
    scale, so the numbers agree with that command. Over the compute budget scores 0 without sampling.
    """
    from .evaluate import compute_metrics, sample_for_fid
    from .flops import gflops
    from .sample import Pretrained

    start = time.perf_counter()
    pretrained = Pretrained.load(str(checkpoint), device=device)
    model, meta, cfg = pretrained.model, pretrained.meta, pretrained.train_config
    if cfg.get("dataset", "fashion-mnist") != "fashion-mnist" or model.num_classes != 10:
        raise ValueError(f"{checkpoint} is not a class-conditional Fashion-MNIST DiT (dataset "
                         f"{cfg.get('dataset')!r}, {model.num_classes} classes)")
    if "step" not in meta or "batch_size" not in cfg:
        raise ValueError(f"{checkpoint} does not record its steps and batch size: export it with "
                         "ditlib.train.export_run (or `python -m ditlib export`)")
    model_gflops = gflops(model)
    tflops = training_tflops(model_gflops, cfg["batch_size"], meta["step"])
    settings = capstone_settings()
    cfg_scale = float(cfg.get("sample_cfg_scale", 1.0))
    max_points = sum(p for _, p in CAPSTONE_BANDS)
    what = (f"{cfg.get('model', 'DiT')} {model.block} {'latent' if pretrained.codec is not None else 'pixel'}, "
            f"{tflops:.0f} of {CAPSTONE_BUDGET_TFLOPS:g} Tflops")
    fid = None
    if tflops > CAPSTONE_BUDGET_TFLOPS * 1.001:
        points = 0
        message = (f"training used {tflops:.0f} Tflops, over the budget of {CAPSTONE_BUDGET_TFLOPS:g} "
                   f"(Gflops {model_gflops:.3f} × batch {cfg['batch_size']} × {meta['step']} steps × 3): 0 points, "
                   f"not sampled; train fewer steps, a smaller batch or model, or a larger patch")
    else:
        with warnings.catch_warnings():            # a grade cell that writes to stderr gets no points
            warnings.simplefilter("ignore")
            samples = sample_for_fid(
                model, settings["num_samples"], cfg_scale=cfg_scale,
                num_sampling_steps=settings["num_sampling_steps"], sampler=settings["sampler"],
                seed=settings["seed"], batch_size=settings["batch_size"], progress=False,
                noise_schedule=cfg.get("noise_schedule", "linear"), diffusion_steps=cfg.get("diffusion_steps", 1000),
                precision=settings["precision"], clip_denoised=pretrained.codec is None,
                decode=pretrained.codec.decode if pretrained.codec is not None else None)
            fid = compute_metrics(samples, reference=_reference(settings["num_reference"]), seed=settings["seed"],
                                  precision_recall=False, device=pretrained.device)["fid"]
        points = capstone_points(fid)
        missed = [threshold for threshold, _ in capstone_bands() if fid > threshold]
        message = (f"FID-FMNIST {fid:.2f} ({settings['num_samples']} samples, {settings['num_sampling_steps']} "
                   f"DDIM steps, guidance {cfg_scale:g}) → {points}/{max_points} points ({what})"
                   + (f"; the next band starts at FID ≤ {missed[0]:g}" if missed else ""))
    return CapstoneReport(
        checkpoint=str(checkpoint), model=cfg.get("model", "DiT"), block=model.block,
        latent=pretrained.codec is not None, parameters=sum(p.numel() for p in model.parameters()),
        gflops=round(model_gflops, 5), training_tflops=round(tflops, 2),
        within_budget=tflops <= CAPSTONE_BUDGET_TFLOPS * 1.001, cfg_scale=cfg_scale,
        num_samples=settings["num_samples"], num_sampling_steps=settings["num_sampling_steps"], quick=quick_mode(),
        fid=None if fid is None else round(fid, 4), points=points, max_points=max_points,
        seconds=round(time.perf_counter() - start, 1), message=message)


#################################################################################
#                                 Command line                                  #
#################################################################################

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


def add_cli(subparsers) -> None:
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

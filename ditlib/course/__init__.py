"""The course's tooling around the `ditlib` library: what the lessons and the instructors use, not the model.

* `exercises` (with `feedback` and the `checks_*` modules): the notebook exercises' self-checks;
* `viz`: the lessons' plots and widgets;
* `grading`: the nbgrader student release and autograding into a CSV; `capstone`: the capstone's
  budget, rubric and FID grader;
* `cli`: their commands `student-release`, `autograde` and `grade-capstone`, registered with
  `python -m ditlib` through the `ditlib.commands` entry point.

The core of `ditlib` never imports this package. It needs the `course` extra (`pip install -e ".[course]"`,
which `make lab` and `make test` install): JupyterLab, ipywidgets, jupytext and nbgrader.
"""

"""pytest + nbval settings for the lessons: quick mode, and each notebook's execution time.

`make test` collects every notebooks/NN_*.ipynb; nbval runs it cell by cell in a fresh kernel that
inherits this process's environment, so setting DITLIB_QUICK here puts every lesson in quick mode
(`ditlib.runtime.quick_mode`). Cells marked `# NBVAL_CHECK_OUTPUT` (shapes, parameter counts, Gflops,
closed-form values) must reproduce the committed outputs of the full run; the others must not raise.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ditlib.runtime import QUICK_ENV

os.environ[QUICK_ENV] = "1"
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

QUICK_BUDGET_S = 60.0
_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _seconds[Path(path).name] += report.duration     # setup (kernel start) + every cell


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section(f"notebook execution times (quick mode, budget {QUICK_BUDGET_S:.0f} s each)")
    for name, seconds in sorted(_seconds.items()):
        flag = "" if seconds <= QUICK_BUDGET_S else "   <-- over budget"
        terminalreporter.write_line(f"{name:40s} {seconds:7.1f} s{flag}")
    terminalreporter.write_line(f"{'total':40s} {sum(_seconds.values()):7.1f} s")

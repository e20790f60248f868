# Diffusion Transformers from scratch — the two commands, and the book:
#   make lab    set up .venv (first time only) and open JupyterLab on notebooks/
#   make test   set up .venv (first time only) and run every test
#   make book   the static course book, build/book/index.html, from the committed lessons (nothing is executed)
# For instructors (INSTRUCTORS.md):
#   make student                      the students' notebooks, built by nbgrader, in release/
#   make autograde SUBMISSIONS=dir    grade dir/STUDENT/.../ASSIGNMENT.ipynb with nbgrader into grades.csv
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test book venv clean-venv notebooks sync student autograde

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; a second run installs nothing new.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[course,dev,book]"
	@touch $(STAMP)

# JupyterLab refuses to run as root without --allow-root (containers, CI images).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: venv
	$(BIN)/jupyter lab --config=.jupyter-course/jupyter_server_config.py notebooks/ $(ALLOW_ROOT)

test: venv
	$(BIN)/python -m pytest

# The lessons and the capstone as a static site, with their committed outputs and figures (mkdocs.yml;
# mkdocs-jupyter with execute: false, so no kernel starts). Open build/book/index.html.
book: venv
	$(BIN)/mkdocs build --strict --site-dir build/book

# Lessons: notebooks/NN_*.py (py:percent) and notebooks/NN_*.ipynb are a jupytext pair; so are the
# projects assignments/NAME/NAME.py and .ipynb (the capstone).
LESSONS  := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
PROJECTS := $(sort $(wildcard assignments/*/*.py))

# Bring each pair in sync (the newer side wins), e.g. after editing a .py in an editor.
sync: venv
	$(BIN)/jupytext --sync $(LESSONS) $(PROJECTS)

# Re-execute every lesson in full (not quick) mode and save the outputs into the .ipynb files.
# Takes a while on a CPU; one lesson: `make notebooks LESSONS=notebooks/01_forward_noising.py`.
notebooks: sync
	@for py in $(LESSONS); do \
	  nb=$${py%.py}.ipynb; echo "== $$nb"; start=$$(date +%s); \
	  env -u DITLIB_QUICK $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=-1 --ExecutePreprocessor.kernel_name=python3 "$$nb" || exit 1; \
	  echo "   $$(( $$(date +%s) - start )) s"; \
	done
	$(BIN)/jupytext --sync $(LESSONS)

# The student release: every lesson with nbgrader cells and every project becomes an nbgrader assignment;
# `nbgrader generate_assignment` removes solutions, hidden tests and outputs -> release/NAME/NAME.ipynb.
student: venv
	$(BIN)/python -m ditlib student-release --out release

# Autograde with `nbgrader autograde`: SUBMISSIONS/STUDENT/[ASSIGNMENT/]ASSIGNMENT.ipynb (plus the capstone's
# checkpoint files beside it) -> GRADES, one row per student, assignment and exercise. MODE=auto runs lessons
# in quick mode and the capstone in full mode (its thresholds are stated for it); MODE=quick or full for all.
GRADES ?= grades.csv
MODE   ?= auto
autograde: venv
	@test -n "$(SUBMISSIONS)" || { echo "usage: make autograde SUBMISSIONS=folder [GRADES=grades.csv] [MODE=auto|quick|full]"; exit 2; }
	$(BIN)/python -m ditlib autograde --submissions "$(SUBMISSIONS)" --out "$(GRADES)" --mode $(MODE)

clean-venv:
	rm -rf $(VENV)

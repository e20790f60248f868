# Diffusion Transformers from scratch — the two commands:
#   make lab    set up .venv (first time only) and open JupyterLab on notebooks/
#   make test   set up .venv (first time only) and run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test venv clean-venv notebooks sync

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; a second run installs nothing new.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

# JupyterLab refuses to run as root without --allow-root (containers, CI images).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: venv
	$(BIN)/jupyter lab notebooks/ $(ALLOW_ROOT)

test: venv
	$(BIN)/python -m pytest

# Lessons: notebooks/NN_*.py (py:percent) and notebooks/NN_*.ipynb are a jupytext pair.
LESSONS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))

# Bring each pair in sync (the newer side wins), e.g. after editing a .py in an editor.
sync: venv
	$(BIN)/jupytext --sync $(LESSONS)

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

clean-venv:
	rm -rf $(VENV)

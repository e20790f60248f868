# Diffusion Transformers from scratch — the two commands:
#   make lab    set up .venv (first time only) and open JupyterLab on notebooks/
#   make test   set up .venv (first time only) and run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test venv clean-venv

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

clean-venv:
	rm -rf $(VENV)

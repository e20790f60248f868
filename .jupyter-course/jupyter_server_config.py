# `make lab` starts JupyterLab with this file: the file browser on notebooks/ shows the lessons and nothing
# else. Their jupytext pairs (NN_name.py, for review and diffs), the test glue (conftest.py), the folder's
# README and Python's caches stay on disk and in git, hidden from the learner.
c.ContentsManager.hide_globs = ["__pycache__", "*.pyc", "*.pyo", "*.py", "README.md", ".ipynb_checkpoints", "*~"]

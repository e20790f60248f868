"""The errors `ditlib` raises for its users, all under one base class.

`python -m ditlib` prints a `DitlibError` as one line ("error: ...") and exits with status 2; any other
exception is a bug and shows its full traceback. Each class also derives from the built-in exception
that names its kind, so `except ValueError` (or `KeyError`, `FileNotFoundError`) still catches it.
This module imports nothing: every layer of the library may raise these.
"""
from __future__ import annotations


class DitlibError(Exception):
    """Base class: a problem with the user's input, files or environment, with a message saying what to do."""


class ConfigError(DitlibError, ValueError):
    """A value that cannot work: a bad argument, config field, shape or combination of options."""


class UnknownNameError(DitlibError, KeyError):
    """A name that no registry holds (a model, training or VAE config, a dataset, an extractor)."""

    def __str__(self) -> str:           # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class MissingFileError(DitlibError, FileNotFoundError):
    """A file or folder the command needs is not there (checkpoints, weights, data, samples)."""


class ExistingFileError(DitlibError, FileExistsError):
    """An output that would overwrite existing work."""

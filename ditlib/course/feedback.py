"""What every exercise check shares: the `Feedback` it returns, `require`, and the checking helpers.

A learner implements a function in a notebook and calls its check, e.g. ``check_q_sample(q_sample)``;
the checks live in the modules ``checks_*`` and are gathered by :mod:`ditlib.course.exercises`.

Contract of every ``check_<name>(fn)``:

* it calls ``fn`` on a few small, deterministic inputs (edge cases included: a batch of 1, t = 0,
  t = T−1, odd shapes, float32 and float64) and compares the results with a reference written in
  plain torch;
* it returns a :class:`Feedback` and never raises for a mistake in ``fn``: exceptions (including
  ``NotImplementedError``, the placeholder of the student release), ``None``, NumPy arrays, wrong
  shapes, NaNs and wrong values all become a failed Feedback whose message is one friendly sentence;
* wrong values are diagnosed by comparing with known-wrong variants computed in the check (a missing
  square root, swapped coefficients, …), so the message names the likely mistake and the formula to use;
* messages are deterministic (no timings, no random numbers in success messages), and the inputs
  come from a private ``torch.Generator``, so the global random state is left alone;
* where the library already has the routine the exercise asks for (``DiTBlock.forward``,
  ``DiT.forward_with_cfg``, einops, …), ``call_refusing`` refuses a function that runs it: the exercise
  is to write that routine, not to call it.

``bool(feedback)`` is ``feedback.passed``; Jupyter renders it as a green ✓ or red ✗ box.
``require(feedback)`` turns a failure into an ``AssertionError`` (for autograders), and ``CHECKS``
maps each exercise name to its check function (filled as the check modules are imported).

A check is a body decorated with ``@exercise("NAME")`` that returns its success text and raises
:class:`Problem` with the message at the first mistake it finds; ``call``, ``call_refusing``,
``as_tensor``, ``expect_shape``, ``expect_finite`` and ``expect_values`` raise the usual ones.
"""
from __future__ import annotations

import functools
import html
import importlib.util
import inspect
import os
import sys
import types
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Feedback", "require", "CHECKS", "Problem", "exercise", "short_message", "call", "call_refusing",
           "library_folder", "as_tensor", "expect_shape", "expect_finite", "is_close", "expect_values", "randn"]


@dataclass(frozen=True)
class Feedback:
    """The result of a check: truthy when passed; ``str()`` is the message."""
    passed: bool
    message: str
    exercise: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def _text(self) -> str:
        return self.message.removeprefix("✓ ")

    def __repr__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.exercise}: {self._text()}"

    def _repr_html_(self) -> str:
        color, background, mark = ("#1b5e20", "#e8f5e9", "✓") if self.passed else ("#b71c1c", "#fdecea", "✗")
        return (f'<div style="border-left:4px solid {color};background:{background};color:{color};'
                f'padding:6px 10px;margin:4px 0;font-family:sans-serif">'
                f'<b>{mark} {html.escape(self.exercise)}</b>: {html.escape(self._text())}</div>')


def require(feedback: Feedback) -> Feedback:
    """Raise AssertionError(feedback.message) if the check failed; otherwise return the feedback."""
    if not isinstance(feedback, Feedback):
        raise TypeError(f"require expects the Feedback returned by a check, got {type(feedback).__name__}")
    if not feedback.passed:
        raise AssertionError(feedback.message)
    return feedback


CHECKS: dict = {}


#################################################################################
#                      Shared helpers of the check modules                      #
#################################################################################


class Problem(Exception):
    """Raised inside a check at the first problem found; its text becomes the Feedback message."""


def exercise(name: str):
    """Decorator: turns a check body (fn -> success text) into a check that always returns a Feedback."""
    def wrap(body):
        @functools.wraps(body)
        def check(fn) -> Feedback:
            if not callable(fn):
                return Feedback(False, f"check_{name} expects your function itself, e.g. check_{name}({name}), "
                                       f"but it got a {type(fn).__name__}.", name)
            try:
                return Feedback(True, "✓ Correct: " + body(fn), name)
            except Problem as problem:
                return Feedback(False, str(problem), name)
            except Exception as e:  # the learner's output broke the checker: still answer in one sentence
                return Feedback(False, f"The checker could not handle your output ({type(e).__name__}: "
                                       f"{short_message(e)}) — make sure your function returns what the exercise "
                                       f"asks for.", name)
        CHECKS[name] = check
        return check
    return wrap


def short_message(e: BaseException) -> str:
    """The first line of an exception's message, without its full stop, at most 160 characters."""
    lines = str(e).strip().splitlines()
    text = lines[0].strip().rstrip(".") if lines else "(no message)"
    return text if len(text) <= 160 else text[:157] + "..."


def call(fn, args, hints: dict):
    """fn(*args), turning any exception into a one-sentence Problem (hints: 'broadcast', 'IndexError', 'TypeError', 'default')."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise Problem("This function is not implemented yet — replace the `raise NotImplementedError()` line "
                      "with your code and run the check again.") from None
    except Exception as e:
        text = str(e)
        if isinstance(e, RuntimeError) and ("size of tensor" in text or "broadcast" in text or "shape" in text):
            hint = hints.get("broadcast", hints["default"])
        else:
            hint = hints.get(type(e).__name__, hints["default"])
        raise Problem(f"Your function raised {type(e).__name__}: {short_message(e)} — {hint}.") from None


def call_refusing(fn, args, hints: dict, forbidden: dict, refusal: str):
    """call(fn, args, hints), refusing the shortcut: if any of the `forbidden` routines ran while fn ran, a
    Problem(refusal.format(name=…)) instead of the result (or of fn's error), naming the first one of
    `forbidden` that ran.

    `forbidden` maps a Python function (a method as the class's function, e.g. ``DiTBlock.forward``), a
    built-in one (e.g. ``torch.nn.functional.scaled_dot_product_attention``) or a package folder (a tuple of
    path prefixes, see `library_folder`) to the name the message gives it. A
    profile hook watches for the routine's own code object, so the routine is recognised however fn reaches
    it: through its module, a name imported into the notebook, a bound method, the class or another library
    function. The hook only records; nothing of the library is patched, and the previous hook is restored.
    """
    builtin = {id(r): name for r, name in forbidden.items() if isinstance(r, types.BuiltinFunctionType)}
    codes = {id(inspect.unwrap(r).__code__): name for r, name in forbidden.items()
             if not isinstance(r, (tuple, types.BuiltinFunctionType))}
    folders = [(r, name) for r, name in forbidden.items() if isinstance(r, tuple)]
    seen = set()

    def watch(frame, event, arg):
        if event == "c_call" and id(arg) in builtin:
            seen.add(builtin[id(arg)])
        if event != "call":
            return
        code = frame.f_code
        name = codes.get(id(code))
        if name is None and folders and code.co_name != "<module>":     # importing a package is no call into it
            name = next((n for prefixes, n in folders if code.co_filename.startswith(prefixes)), None)
        if name is not None:
            seen.add(name)

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        try:
            out = call(fn, args, hints)
        finally:
            sys.setprofile(previous)
    except Problem:
        if not seen:
            raise
        out = None                                   # the refusal says more than the error that followed
    if seen:
        raise Problem(refusal.format(name=next(n for n in forbidden.values() if n in seen))) from None
    return out


def library_folder(package: str) -> tuple | None:
    """The path prefixes of an installed package's files (as given and with links resolved), for
    `call_refusing`; None if the package is not installed. The package is not imported."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    return tuple({os.path.join(folder, ""), os.path.join(os.path.realpath(folder), "")})


def as_tensor(out, name: str | None = None, numpy_ok: bool = False) -> torch.Tensor:
    """The learner's output as a tensor, or a Problem saying why it is not one."""
    it = "Your function returned" if name is None else f"The {name} you returned is"
    if out is None:
        raise Problem(f"{it} None — did you forget the `return` statement?")
    if isinstance(out, (np.ndarray, np.generic)):
        if numpy_ok:
            return torch.from_numpy(np.array(out))
        raise Problem(f"{it} a NumPy array — please return a torch tensor (use torch operations such as "
                      f"torch.sqrt instead of NumPy ones).")
    if not isinstance(out, torch.Tensor):
        wanted = "a torch tensor or a NumPy array" if numpy_ok else "a torch tensor"
        raise Problem(f"{it} a {type(out).__name__}, but {wanted} was expected.")
    return out


def expect_shape(out: torch.Tensor, expected, known=(), name: str = "output", hint: str = "") -> None:
    got = tuple(out.shape)
    if got == tuple(expected):
        return
    for shape, message in known:
        if got == tuple(shape):
            raise Problem(message)
    raise Problem(f"Your {name} has shape {got} but should have shape {tuple(expected)}{hint}.")


def expect_finite(out: torch.Tensor, name: str = "output") -> None:
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise Problem(f"Your {name} contains NaN or infinite values — look for a square root of a negative "
                      f"number, a log of zero or a division by zero.")


def is_close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol)


def expect_values(out, ref, variants, *, atol, rtol, formula, case, name="output", rerun=None, random_msg=""):
    """Pass if out ≈ ref; else name the first known-wrong variant it matches, or the randomness, or the error."""
    if is_close(out, ref, atol, rtol):
        return
    for wrong, message in variants:
        if wrong is not None and is_close(out, wrong, atol, rtol):
            raise Problem(message)
    if rerun is not None and not is_close(out, rerun(), 1e-6, 0.0):
        raise Problem(random_msg)
    err = (out.detach().double() - ref.double()).abs().max().item()
    raise Problem(f"Your {name} has the right shape but wrong values on {case} (largest error {err:.3g}) "
                  f"— it should be {formula}.")


def randn(g: torch.Generator, shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

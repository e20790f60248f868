"""What the exercise-check tests share: a wrong solution must fail with a one-line message naming the mistake."""
from ditlib.course.feedback import Feedback


def fails_with(check, fn, *phrases) -> Feedback:
    """check(fn) fails, in one line, with every one of `phrases` in its message; returns the Feedback."""
    fb = check(fn)
    assert isinstance(fb, Feedback) and not fb.passed, f"{getattr(fn, '__name__', fn)!r} passed"
    assert "\n" not in fb.message, fb.message
    for phrase in phrases:
        assert phrase in fb.message, f"{phrase!r} not in {fb.message!r}"
    return fb

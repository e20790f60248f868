"""Specification of the check of lesson 11's memory exercise, `max_batch_per_gpu`: a learner's solution passes, and
each typical mistake (DDP sharded, FSDP not sharded, the wrong bytes per parameter, GiB, rounding up, a negative
batch, sharded activations, a fraction, a memory figure) fails with a message that names it."""
import math

import pytest

from ditlib.course.checks_scaling import check_max_batch_per_gpu
from ditlib.course.feedback import CHECKS, Feedback
from exercise_helpers import fails_with


def max_batch_per_gpu(num_params, activation_bytes_per_image, gpu_gb, num_gpus, fsdp):
    """The reference learner's solution: 20 bytes per parameter (÷ num_gpus under FSDP), the rest for activations."""
    static = 20 * num_params / (num_gpus if fsdp else 1)
    return max(0, math.floor((gpu_gb * 1e9 - static) / activation_bytes_per_image))


def _variant(per_param=20, shard=None, act_shard=False, unit=1e9, rounding=math.floor, clip=True, strict=False):
    """A learner's solution with one mistake in it."""
    def fn(num_params, act, gpu_gb, num_gpus, fsdp):
        sharded = fsdp if shard is None else shard
        static = per_param * num_params / (num_gpus if sharded else 1)
        b = (gpu_gb * unit - static) / (act / num_gpus if act_shard else act)
        b = rounding(b) - (1 if strict and b == int(b) else 0)
        return max(0, b) if clip else b
    return fn


def _fails_with(fn, *phrases):
    return fails_with(check_max_batch_per_gpu, fn, *phrases)


def test_the_reference_solution_passes():
    assert CHECKS["max_batch_per_gpu"] is check_max_batch_per_gpu
    fb = check_max_batch_per_gpu(max_batch_per_gpu)
    assert fb.passed, fb.message
    assert fb.message == ("✓ Correct: max_batch_per_gpu gives the largest per-GPU batch under DDP and FSDP "
                          "on 9 test cases.")


def test_other_correct_solutions_pass():
    def in_integers(num_params, act, gpu_gb, num_gpus, fsdp):       # exact: // on integer bytes
        free = gpu_gb * 10 ** 9 * num_gpus - 20 * num_params if fsdp else gpu_gb * 10 ** 9 - 20 * num_params
        return max(0, free // (act * num_gpus) if fsdp else free // act)

    def by_counting(num_params, act, gpu_gb, num_gpus, fsdp):       # grow the batch while the next image fits
        static, b = 20 * num_params / (num_gpus if fsdp else 1), 0
        while static + (b + 1) * act <= gpu_gb * 1e9:
            b += 1
        return b
    for fn in (in_integers, by_counting, lambda *a: float(max_batch_per_gpu(*a))):
        fb = check_max_batch_per_gpu(fn)
        assert fb.passed, fb.message


def test_the_check_knows_the_answers():
    # the XL/2-like case by hand: 13.5 GB static, (80 - 13.5) GB / 0.66 GB = 100.75 -> 100; the boundary: exactly 35
    assert max_batch_per_gpu(675_129_632, 660_000_000, 80, 8, False) == 100
    assert max_batch_per_gpu(1_000_000_000, 1_000_000_000, 40, 4, True) == 35
    assert max_batch_per_gpu(3_000_000_000, 480_000_000, 40, 8, False) == 0
    _fails_with(lambda *a: max_batch_per_gpu(*a) + 2, "you returned 102", "the largest batch that fits is 100")


@pytest.mark.parametrize("wrong, phrases", [
    (_variant(shard=True), ("DDP does not shard",)),
    (_variant(shard=False), ("With fsdp=True", "sharded", "20 · num_params / num_gpus")),
    (_variant(per_param=16), ("16 bytes per parameter (4 fp32 copies)", "forgot the EMA", "5 fp32 copies")),
    (_variant(per_param=12), ("12 bytes per parameter (3 fp32 copies)",)),
    (_variant(per_param=8), ("8 bytes per parameter (2 fp32 copies)", "weights and their gradients")),
    (_variant(per_param=4), ("4 bytes per parameter (1 fp32 copy)", "only the weights")),
    (_variant(per_param=5), ("Each fp32 number takes 4 bytes",)),
    (_variant(unit=2 ** 30), ("gibibytes", "10⁹")),
    (_variant(rounding=math.ceil), ("rounded up", "does not fit", "round down")),
    (_variant(rounding=round), ("rounded up", "round()")),
    (_variant(clip=False), ("negative batch", "return 0", "3B-parameter")),
    (_variant(act_shard=True), ("Activations are not sharded", "under FSDP too")),
    (_variant(rounding=lambda b: b), ("not a whole number", "round down")),
    (_variant(strict=True), ("exactly at the boundary", "with ≤, not <")),
    (lambda n, a, g, k, f: max_batch_per_gpu(n, a, g, k, f) * k, ("global batch",)),
    (lambda n, a, g, k, f: 20 * n / (k if f else 1) + max_batch_per_gpu(n, a, g, k, f) * a, ("a memory figure",)),
    (lambda n, a, g, k, f: (20 * n / (k if f else 1)) / 1e9, ("a memory figure", "return a batch size")),
    (lambda n, a, g, k, f: [max_batch_per_gpu(n, a, g, k, f)], ("one whole number", "list")),
    (lambda n, a, g, k, f: float("nan"), ("nan", "whole number")),
])
def test_each_mistake_is_named(wrong, phrases):
    _fails_with(wrong, *phrases)


def test_sharding_the_activations_only_under_fsdp_is_named_too():
    def shards_activations(num_params, act, gpu_gb, num_gpus, fsdp):
        static = 20 * num_params / (num_gpus if fsdp else 1)
        return max(0, math.floor((gpu_gb * 1e9 - static) / (act / num_gpus if fsdp else act)))
    fb = _fails_with(shards_activations, "Activations are not sharded")
    assert fb.message.startswith("On a DiT-XL/2-like model under FSDP on 8 GPUs")


def test_a_solution_that_never_shards_passes_ddp_and_fails_on_fsdp():
    fb = _fails_with(_variant(shard=False), "With fsdp=True")
    assert "under FSDP on 8 GPUs" in fb.message


def test_a_stub_and_a_wrong_signature_give_one_sentence():
    def stub(*args):
        raise NotImplementedError()
    _fails_with(stub, "not implemented yet")
    _fails_with(lambda num_params, num_gpus, fsdp: 0, "TypeError", "max_batch_per_gpu(num_params, activation_bytes")
    _fails_with(lambda *a: None, "None", "return")


def test_odd_return_values_and_errors_give_one_sentence_and_the_message_is_deterministic():
    import numpy as np
    import torch
    for value in ("oops", torch.zeros(2), (torch.zeros(1), torch.zeros(1)), np.zeros(3), [[0.0]], float("nan"),
                  float("inf"), True, -1):
        _fails_with(lambda *a, value=value: value)
    _fails_with(lambda *a: 1 / 0, "ZeroDivisionError", "division by zero")
    assert check_max_batch_per_gpu(max_batch_per_gpu).message == check_max_batch_per_gpu(max_batch_per_gpu).message
    for value in (torch.tensor(100), np.int64(100), np.array([100.0])):   # the right number, in another container
        fb = check_max_batch_per_gpu(lambda *a, value=value: value if a[:4] == (675_129_632, 660_000_000, 80, 8)
                                     and not a[4] else max_batch_per_gpu(*a))
        assert fb.passed, fb.message

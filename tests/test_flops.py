"""The FLOP model: 4·D per unmasked score entry per (batch, head); backward 2.5× forward."""
import itertools

import numpy as np
import pytest

from harness.measure.flops import case_flops, forward_flops, score_entries, tflops
from harness.problem.inputs import causal_keep
from harness.spec import Case


def test_full_problem_counts_every_entry():
    case = Case(impl="numpy", batch=2, heads=8, seq_len=1024, head_dim=64)
    assert forward_flops(case) == 4 * 64 * 1024 * 1024 * 2 * 8


def test_causal_square_counts_the_lower_triangle():
    assert score_entries(4, 4, True) == 10
    case = Case(impl="numpy", batch=1, heads=1, seq_len=2048, head_dim=128, causal=True)
    assert forward_flops(case) == 4 * 128 * 2048 * 2049 // 2


@pytest.mark.parametrize("nq, nk", list(itertools.product([1, 5, 33], [1, 7, 50])))
def test_causal_count_equals_the_mask_the_reference_uses(nq, nk):
    assert score_entries(nq, nk, True) == int(causal_keep(nq, nk).sum())


def test_backward_is_two_and_a_half_forward():
    fwd = Case(impl="numpy", seq_len=256)
    both = Case(impl="numpy", seq_len=256, mode="fwd_bwd")
    assert case_flops(both) == pytest.approx(3.5 * case_flops(fwd))


def test_tflops():
    assert tflops(2_000_000_000_000, 0.5) == pytest.approx(4.0)
    assert tflops(10, None) is None

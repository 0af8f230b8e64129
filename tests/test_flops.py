"""The FLOP model: 4·D per unmasked score entry per (batch, query head); backward 2.5×
forward. The bytes model: Q, K, V, O once each, K/V per K/V head, real queries and the keys
some real query keeps only."""
import itertools

import numpy as np
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.roofline import FUSED, MATERIALISING, bytes_moved
from harness.case import BOTTOM_RIGHT, CAUSAL_ALIGNS, TOP_LEFT
from harness.measure.flops import attention_flops, case_flops, forward_flops, score_entries, tflops
from harness.measure.traffic import backward_bytes, case_bytes, forward_bytes, gbps, query_counts
from harness.problem.inputs import case_keep, causal_keep, key_valid_lengths, real_query_rows
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



# --- the causal alignment and grouped K/V heads ---------------------------------------------


def kept_by_brute_force(nq, nk, align, valid=None):
    """Kept score entries counted one by one: query i keeps key j < n (n the real keys) when
    j <= i (top-left) or j <= n - Nq + i (bottom-right)."""
    n = nk if valid is None else valid
    offset = 0 if align == TOP_LEFT else n - nq
    return sum(1 for i in range(nq) for j in range(n) if j <= i + offset)


@given(st.integers(0, 40), st.integers(0, 40), st.sampled_from(CAUSAL_ALIGNS))
def test_score_entries_count_what_the_mask_keeps(nq, nk, align):
    assert score_entries(nq, nk, True, align) == kept_by_brute_force(nq, nk, align)
    assert score_entries(nq, nk, True, align) == int(causal_keep(nq, nk, align).sum())
    assert score_entries(nq, nk, False, align) == nq * nk


@pytest.mark.parametrize("nk", [1, 17, 4096])
def test_a_one_token_bottom_right_decode_step_costs_4_d_nk_per_batch_and_head(nk):
    case = Case(impl="numpy", batch=3, heads=8, kv_heads=2, seq_len=1, seq_len_kv=nk,
                head_dim=128, causal=True, causal_align=BOTTOM_RIGHT)
    assert forward_flops(case) == 4 * 128 * nk * 3 * 8
    top_left = Case(impl="numpy", batch=3, heads=8, seq_len=1, seq_len_kv=nk, head_dim=128,
                    causal=True)
    assert forward_flops(top_left) == 4 * 128 * 1 * 3 * 8  # query 0 sees key 0 only


def test_bottom_right_with_more_queries_than_keys_counts_only_rows_that_keep_a_key():
    assert score_entries(7, 4, True, BOTTOM_RIGHT) == 1 + 2 + 3 + 4
    assert score_entries(7, 4, True, TOP_LEFT) == 1 + 2 + 3 + 4 * 4


def test_kv_heads_change_no_flop():
    grouped = Case(impl="numpy", heads=8, kv_heads=1, seq_len=64, causal=True)
    assert case_flops(grouped) == case_flops(Case(impl="numpy", heads=8, seq_len=64, causal=True))


@pytest.mark.parametrize("align", [TOP_LEFT, BOTTOM_RIGHT])
def test_padded_flops_count_each_sequences_real_keys_with_the_alignment(align):
    case = Case(impl="numpy", batch=3, heads=2, seq_len=6, seq_len_kv=11, head_dim=4,
                causal=True, causal_align=align, padding=0.7)
    entries = sum(kept_by_brute_force(6, 11, align, int(n)) for n in key_valid_lengths(case))
    assert attention_flops(case) == 4 * 4 * 2 * entries


# --- the bytes model --------------------------------------------------------------------------


def test_forward_bytes_are_q_k_v_o_once_each_with_k_and_v_per_kv_head():
    case = Case(impl="numpy", batch=2, heads=8, kv_heads=2, seq_len=3, seq_len_kv=100,
                head_dim=64, dtype="bfloat16")
    q = 2 * 8 * 3 * 64
    kv = 2 * 2 * 100 * 64
    assert forward_bytes(case) == 2 * (2 * q + 2 * kv)
    assert case_bytes(case) == forward_bytes(case)
    ungrouped = Case(impl="numpy", batch=2, heads=8, seq_len=3, seq_len_kv=100, head_dim=64,
                     dtype="bfloat16")
    assert forward_bytes(ungrouped) - forward_bytes(case) == 2 * 2 * (2 * 8 - 2 * 2) * 100 * 64


def test_backward_bytes_read_q_k_v_o_do_and_write_dq_dk_dv():
    case = Case(impl="numpy", mode="fwd_bwd", batch=1, heads=4, kv_heads=1, seq_len=10,
                seq_len_kv=20, head_dim=8)
    q, kv = 4 * 10 * 8, 1 * 20 * 8
    assert backward_bytes(case) == 4 * (4 * q + 4 * kv)
    assert case_bytes(case) == forward_bytes(case) + backward_bytes(case)


def test_bytes_count_real_keys_only_and_a_mask_that_keeps_every_key_changes_none():
    case = Case(impl="numpy", batch=3, heads=2, seq_len=5, seq_len_kv=40, head_dim=4,
                padding=0.5)
    real = int(sum(key_valid_lengths(case)))
    assert real < 3 * 40
    assert forward_bytes(case) == 4 * (2 * 3 * 2 * 5 * 4 + 2 * 2 * 4 * real)
    plain = Case(impl="numpy", batch=3, heads=2, seq_len=5, seq_len_kv=40, head_dim=4)
    causal = Case(impl="numpy", batch=3, heads=2, seq_len=5, seq_len_kv=40, head_dim=4,
                  causal=True, causal_align=BOTTOM_RIGHT)
    assert forward_bytes(plain) == forward_bytes(causal)  # the last query keeps every key
    top_left = Case(**{**causal.to_dict(), "causal_align": TOP_LEFT})
    assert forward_bytes(top_left) == 4 * (2 * 3 * 2 * 5 * 4 + 2 * 3 * 2 * 4 * 5)  # keys 0..4


@pytest.mark.parametrize("batch, heads, kv_heads", [(1, 8, 2), (4, 32, 8)])
def test_a_windowed_decode_step_reads_only_the_windows_keys(batch, heads, kv_heads):
    def decode(window):
        return Case(impl="numpy", batch=batch, heads=heads, kv_heads=kv_heads, seq_len=1,
                    seq_len_kv=4096, head_dim=128, causal=True, causal_align=BOTTOM_RIGHT,
                    window=window, dtype="bfloat16")

    q = batch * heads * 128
    assert forward_bytes(decode(128)) == 2 * (2 * q + 2 * batch * kv_heads * 128 * 128)
    assert forward_bytes(decode(0)) == 2 * (2 * q + 2 * batch * kv_heads * 4096 * 128)
    q_and_o = 2 * 2 * q
    assert forward_bytes(decode(0)) - q_and_o == 32 * (forward_bytes(decode(128)) - q_and_o)


def test_a_windowed_decode_over_ragged_caches_reads_each_sequences_window():
    case = Case(impl="numpy", batch=4, heads=2, kv_heads=1, seq_len=1, seq_len_kv=64,
                head_dim=8, causal=True, causal_align=BOTTOM_RIGHT, window=16,
                lengths="longtail")
    caches = [int(n) for n in key_valid_lengths(case)]
    kept = sum(min(16, n) for n in caches)
    assert kept < sum(caches)
    assert forward_bytes(case) == 4 * (2 * 4 * 2 * 8 + 2 * 1 * 8 * kept)


def _brute_force_elements(case):
    """(kept K/V elements, real K/V elements, batch-head bias elements, shared bias elements),
    counted column by column from the reference's mask over the real query rows."""
    keep = case_keep(case)
    keep = np.broadcast_to(True if keep is None else keep,
                           (case.batch, 1, case.seq_len, case.seq_len_kv))[:, 0]
    valid = key_valid_lengths(case)
    real_keys = keep & (np.arange(case.seq_len_kv) < (case.seq_len_kv if valid is None
                                                      else valid[:, None, None]))
    rows = real_query_rows(case)
    if rows is not None:
        real_keys = real_keys & rows[:, 0]
    per_key = case.kv_heads * case.head_dim
    kept = int(real_keys.any(axis=1).sum()) * per_key
    real = (case.batch * case.seq_len_kv if valid is None else int(valid.sum())) * per_key
    return kept, real, case.heads * int(real_keys.sum()), case.heads * int(real_keys.any(0).sum())


@settings(max_examples=150, deadline=None)
@given(batch=st.integers(1, 3), seq_len=st.integers(1, 12), seq_len_kv=st.integers(1, 16),
       causal=st.booleans(), align=st.sampled_from(CAUSAL_ALIGNS), window=st.integers(0, 18),
       ragged=st.sampled_from(["none", "padding", "uniform", "longtail", "bimodal"]),
       square=st.booleans(), mode=st.sampled_from(["fwd", "fwd_bwd"]))
def test_bytes_equal_a_brute_force_count_of_the_kept_key_columns(batch, seq_len, seq_len_kv,
                                                                  causal, align, window, ragged,
                                                                  square, mode):
    nk = seq_len if square else seq_len_kv
    fields = {"impl": "numpy", "batch": batch, "heads": 4, "kv_heads": 2, "seq_len": seq_len,
              "seq_len_kv": nk, "head_dim": 2, "causal": causal, "causal_align": align,
              "window": window if causal else 0, "mode": mode}
    if ragged == "padding":
        fields["padding"] = 0.5
    elif ragged != "none":
        fields["lengths"] = ragged
    for bias in ("none", "batch_head", "head"):  # the seed, so the lengths, follow the case
        case = Case(**fields, bias=bias)
        kept, real, per_sequence_bias, shared_bias = _brute_force_elements(case)
        queries = 4 * 2 * sum(query_counts(case))
        read = {"none": 0, "batch_head": per_sequence_bias, "head": shared_bias}[bias]
        forward = 4 * (2 * queries + 2 * kept + read)
        backward = 4 * (4 * queries + 2 * kept + 2 * real + read)
        assert forward_bytes(case) == forward
        assert backward_bytes(case) == backward
        assert case_bytes(case) == forward + (backward if mode == "fwd_bwd" else 0)


def test_backward_writes_every_real_keys_gradient_but_reads_only_the_kept_keys():
    case = Case(impl="numpy", mode="fwd_bwd", batch=1, heads=2, kv_heads=1, seq_len=1,
                seq_len_kv=64, head_dim=8, causal=True, causal_align=BOTTOM_RIGHT, window=4)
    q = 2 * 8
    assert backward_bytes(case) == 4 * (4 * q + 2 * 4 * 8 + 2 * 64 * 8)
    full = Case(**{**case.to_dict(), "window": 0})
    assert backward_bytes(full) == 4 * (4 * q + 4 * 64 * 8)
    assert backward_bytes(full) - backward_bytes(case) == 4 * 2 * (64 - 4) * 8


def test_layers_have_no_bytes_and_gbps_needs_both_figures():
    assert case_bytes(Case(impl="torch.mha", level="mha")) is None
    assert gbps(3_000_000_000, 0.5) == pytest.approx(6.0)
    assert gbps(None, 0.5) is None and gbps(10, None) is None


@pytest.mark.parametrize("cls", [MATERIALISING, FUSED])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_the_roofline_counts_k_and_v_per_kv_head(cls, mode):
    def record(**kw):
        c = Case(impl="numpy", mode=mode, batch=2, heads=8, seq_len=256, head_dim=64, **kw)
        return c.to_dict()

    full, grouped = bytes_moved(record(), cls), bytes_moved(record(kv_heads=2), cls)
    k_or_v = 2 * 256 * 64 * 4  # one head of K (or V) over the batch, float32
    if cls == MATERIALISING:  # K, V (and dK, dV) once each
        per_kv_head = 2 * k_or_v * (1 if mode == "fwd" else 3)
    else:  # K, V read once per block of 128 queries (and dK, dV written once)
        per_kv_head = 2 * k_or_v * 2 + (0 if mode == "fwd" else 4 * k_or_v)
    assert full - grouped == (8 - 2) * per_kv_head
    old = {k: v for k, v in record().items() if k not in ("kv_heads", "causal_align")}
    assert bytes_moved(old, cls) == full  # a record from before the fields: as many heads


def test_a_fused_bottom_right_decode_step_reads_every_key_once():
    def record(align):
        return Case(impl="torch.sdpa", batch=1, heads=8, kv_heads=2, seq_len=1, seq_len_kv=1000,
                    head_dim=64, causal=True, causal_align=align).to_dict()

    assert bytes_moved(record(BOTTOM_RIGHT), FUSED) == 4 * (2 * 8 * 64 + 2 * 2 * 1000 * 64)
    assert bytes_moved(record(TOP_LEFT), FUSED) == 4 * (2 * 8 * 64 + 2 * 2 * 1 * 64)

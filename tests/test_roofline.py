"""The roofline: the bytes model per implementation class, the roof at each intensity, and each
point's share of it, on synthetic records with known sizes."""
import pytest

from harness.analysis.roofline import (FUSED, MATERIALISING, TILE, bytes_moved, impl_class,
                                       point, roofline)
from harness.measure.flops import attention_flops
from harness.spec import Case

PEAKS = {"cpu": {"matmul_tflops": {"float32": 0.1, "bfloat16": 0.2}, "bandwidth_gbs": 5.0}}  # ridge at 20 FLOP/B


def rec(impl="torch.naive", n=1024, median=1e-2, kernel=None, **case):
    c = Case(impl=impl, seq_len=n, **case)
    return {**c.to_dict(), "case_id": c.case_id, "status": "ok", "kernel": kernel,
            "median_s": median, "flops": attention_flops(c), "stable": True}


def test_the_class_comes_from_the_kernel_that_ran_then_the_name():
    assert impl_class(rec(kernel="flash_attention"))[0] == FUSED
    assert impl_class(rec("torch.sdpa", kernel="math"))[0] == MATERIALISING
    assert impl_class(rec("xformers"))[0] == FUSED
    assert impl_class(rec("numpy")) == (MATERIALISING, "not known to be fused")


def test_a_materialising_kernel_moves_the_scores_four_times_plus_q_k_v_o():
    r = rec(n=1024, heads=8, head_dim=64, batch=2)
    scores = 2 * 8 * 1024 * 1024 * 4
    qkvo = 2 * 8 * 4 * 1024 * 64 * 4
    assert bytes_moved(r, MATERIALISING) == 4 * scores + qkvo
    assert bytes_moved({**r, "causal": True}, MATERIALISING) == 4 * scores + qkvo  # full matrix


def test_a_fused_kernel_re_reads_k_and_v_once_per_query_block():
    r = rec(n=1024, heads=1, head_dim=64)
    blocks = 1024 // TILE
    assert bytes_moved(r, FUSED) == (2 * 1024 * 64 + 2 * 64 * 1024 * blocks) * 4
    small = rec(n=TILE, heads=1, head_dim=64)  # one block: Q, K, V read and O written once
    assert bytes_moved(small, FUSED) == 4 * TILE * 64 * 4
    causal = bytes_moved({**r, "causal": True}, FUSED)
    assert bytes_moved(r, FUSED) / 2 < causal < bytes_moved(r, FUSED)  # about half the K, V


def test_backward_adds_traffic_and_bfloat16_halves_it():
    r = rec(n=512)
    for cls in (MATERIALISING, FUSED):
        assert bytes_moved({**r, "mode": "fwd_bwd"}, cls) > 2 * bytes_moved(r, cls)
        assert bytes_moved({**r, "dtype": "bfloat16"}, cls) * 2 == bytes_moved(r, cls)


def test_each_point_is_placed_under_min_of_peak_and_bandwidth_times_intensity():
    slow = rec(n=2048, median=1.0)
    p, why = point(slow, PEAKS)
    assert why == ""
    assert p["intensity"] == pytest.approx(p["flops"] / p["bytes"])
    assert p["roof_tflops"] == pytest.approx(min(0.1, p["intensity"] * 5.0 / 1e3))
    assert p["pct_of_roof"] == pytest.approx(100 * p["achieved_tflops"] / p["roof_tflops"])
    assert p["bound"] == "memory" and not p["above_roof"]  # naive at D=64: about 15 FLOP/B
    fused, _ = point(rec("torch.sdpa", n=2048, median=1.0, kernel="flash_attention"), PEAKS)
    assert fused["intensity"] > p["intensity"] and fused["bound"] == "compute"
    assert fused["roof_tflops"] == 0.1
    # a figure faster than the model allows is flagged, not hidden
    fast, _ = point(rec(n=2048, median=1e-6), PEAKS)
    assert fast["above_roof"] and fast["pct_of_roof"] > 100


def test_what_cannot_be_placed_is_counted_with_its_reason():
    records = [rec(), rec(level="mha"), rec(dtype="float16"), {**rec(), "status": "oom"}]
    data = roofline(records, PEAKS)
    assert len(data["points"]) == 1
    assert data["left_out"] == {"no bytes model for mha layers": 1,
                                "no measured matmul peak and bandwidth for cpu float16": 1}
    (roof,) = data["roofs"]
    assert roof["ridge"] == pytest.approx(0.1 * 1e3 / 5.0)
    assert roofline([rec()], {})["left_out"] == {
        "no measured matmul peak and bandwidth for cpu float32": 1}

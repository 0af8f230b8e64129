"""The float64 truth shared by a run's workers through a cache directory: what a second worker
loads is exactly what the first computed, a damaged entry is recomputed, and a fwd_bwd case
finds its gradients."""
import numpy as np
import pytest

from harness.problem import truth
from harness.spec import Case


@pytest.fixture
def fresh(tmp_path):
    """A cache directory and empty in-process caches (as in a newly started worker)."""
    truth.clear_caches()
    truth.use_cache_dir(tmp_path)
    yield truth.clear_caches
    truth.use_cache_dir(None)
    truth.clear_caches()


def test_a_second_worker_loads_exactly_what_the_first_computed(fresh, tmp_path, monkeypatch):
    case = Case(impl="numpy", heads=2, seq_len=48, head_dim=16, causal=True, dtype="bfloat16")
    inputs, ref = truth.problem(case)
    tol = truth.tolerance_for(case)
    assert list(tmp_path.glob("problem-*.npz")) and list(tmp_path.glob("tolerance-*.json"))
    fresh()

    def no_recomputing(*args, **kwargs):
        raise AssertionError("the cached reference was recomputed")

    monkeypatch.setattr(truth, "_reference", no_recomputing)
    inputs2, ref2 = truth.problem(case)
    assert np.array_equal(ref, ref2) and truth.tolerance_for(case) == tol
    assert all(np.array_equal(inputs[n], inputs2[n]) for n in inputs)


def test_a_damaged_entry_is_recomputed(fresh, tmp_path):
    case = Case(impl="numpy", heads=2, seq_len=32, head_dim=16)
    _, ref = truth.problem(case)
    for path in tmp_path.glob("problem-*.npz"):
        path.write_bytes(b"not an npz file")
    fresh()
    _, again = truth.problem(case)
    assert np.array_equal(ref, again)


def test_fwd_bwd_finds_gradients_after_a_forward_filled_the_cache(fresh):
    fwd = Case(impl="torch.naive", heads=2, seq_len=32, head_dim=16)
    truth.problem(fwd)
    fresh()
    bwd = Case(impl="torch.naive", heads=2, seq_len=32, head_dim=16, mode="fwd_bwd")
    inputs, _ = truth.problem(bwd)
    grads = truth.reference_grads(bwd)
    assert set(grads) == {"q", "k", "v"} and "dout" in inputs
    fresh()
    inputs2, _ = truth.problem(bwd)  # now from the disk, gradients included
    assert all(np.array_equal(grads[n], truth.reference_grads(bwd)[n]) for n in grads)
    assert np.array_equal(inputs["dout"], inputs2["dout"])


def test_the_cache_stops_growing_at_its_limit(fresh, tmp_path, monkeypatch):
    monkeypatch.setattr(truth, "CACHE_LIMIT_BYTES", 1)
    truth.problem(Case(impl="numpy", heads=2, seq_len=32, head_dim=16))
    assert not list(tmp_path.glob("problem-*.npz"))


@pytest.mark.parametrize("level", ["kernel", "mha", "encoder"])
def test_fwd_bwd_computes_its_reference_in_one_run_and_it_is_the_forward_reference(level,
                                                                                 monkeypatch):
    fwd = Case(impl="torch.naive" if level == "kernel" else f"torch.{level}", level=level,
               heads=2, seq_len=24, head_dim=8)
    bwd = Case(**{**fwd.to_dict(), "mode": "fwd_bwd"})
    truth.clear_caches()
    _, ref = truth.problem(fwd)
    truth.clear_caches()
    runs = []
    reference = truth._reference
    monkeypatch.setattr(truth, "_reference", lambda *a: runs.append(a[2:]) or reference(*a))
    inputs, ref_bwd = truth.problem(bwd)
    assert runs == [("float64", True)]  # one forward-and-backward, no separate forward
    assert np.array_equal(ref, ref_bwd) and inputs["dout"].shape == ref.shape
    truth.clear_caches()

"""Memory is deterministic, so its growth with N is a unit test: the naive formula holds whole
N×N score matrices (exponent 2), a flash kernel only tiles (exponent near 1)."""
import pytest

from harness import registry
from harness.problem.truth import problem
from harness.measure.memory import measure_peak
from harness.analysis.scaling import fit_exponent
from harness.spec import Case

SEQ_LENS = [512, 1024, 2048, 4096]


def peaks(impl: str) -> list[int]:
    adapter = registry.get(impl)
    out = []
    for n in SEQ_LENS:
        case = Case(impl=impl, batch=1, heads=8, seq_len=n, head_dim=64)
        inputs, _ = problem(case)
        prepared = adapter.prepare(case, inputs)
        try:
            peak, method, _ = measure_peak(prepared, adapter.framework, case.device)
        finally:
            prepared.close()
        assert method == "memray"
        out.append(peak)
    return out


@pytest.mark.parametrize("impl", ["numpy", "torch.naive"])
def test_naive_memory_grows_as_n_squared(impl):
    fit = fit_exponent(SEQ_LENS, peaks(impl))
    assert 1.9 <= fit.exponent <= 2.1, fit


def test_flash_memory_grows_at_most_linearly():
    fit = fit_exponent(SEQ_LENS, peaks("torch.sdpa.flash"))
    assert fit.exponent <= 1.2, fit

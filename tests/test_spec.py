"""Suites expand into the right cases, and every kind of bad suite fails with one clear line."""
from pathlib import Path

import pytest

from harness.spec import Case, SuiteError, load_suite

KNOWN = {"numpy", "torch.naive", "torch.sdpa"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_sweep_is_the_cartesian_product(tmp_path):
    path = write(tmp_path, """
[sweep]
impls = ["numpy", "torch.naive"]
seq_len = [16, 32, 64]
dtype = ["float32", "float64"]
causal = [false, true]
[timing]
budget_s = 0.5
""")
    suite = load_suite(str(path), KNOWN)
    cases = suite.cases()
    assert len(cases) == 2 * 3 * 2 * 2
    assert len({c.case_id for c in cases}) == len(cases)
    assert suite.name == "s" and suite.timing.budget_s == 0.5
    assert {c.seq_len_kv for c in cases} == {16, 32, 64}  # defaults to seq_len
    assert all(c.heads == 8 and c.device == "cpu" for c in cases)


def test_case_id_is_stable_and_round_trips():
    case = Case(impl="numpy", seq_len=77, head_dim=40, heads=3, causal=True)
    assert case.case_id == "numpy/kernel/fwd/cpu/float32/b1-h3-n77x77-d40/causal/s0"
    assert Case.from_dict(case.to_dict()) == case
    assert hash(Case.from_dict(case.to_dict())) == hash(case)


def test_impls_all_expands_to_every_known_implementation(tmp_path):
    path = write(tmp_path, '[sweep]\nimpls = "all"\nseq_len = 8\n')
    assert {c.impl for c in load_suite(str(path), KNOWN).cases()} == KNOWN


@pytest.mark.parametrize("text, expected", [
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\nheads_count = 2\n', "unknown key 'sweep.heads_count'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = [128, -5]\n',
     "key 'sweep.seq_len': expected a positive integer of at most 2147483647 (or a list of "
     "them), got -5"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = "long"\n', "key 'sweep.seq_len': expected a positive integer"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\ncausal = "yes"\n', "key 'sweep.causal': expected true or false"),
    ('[sweep]\nimpls = ["flashy"]\nseq_len = 8\n', "unknown implementation 'flashy'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\ndtype = "float8"\n', "key 'sweep.dtype': expected one of"),
    ('[sweep]\nimpls = ["numpy"]\n', "missing key 'sweep.seq_len'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\n[timing]\nbudget_s = "x"\n',
     "key 'timing.budget_s': expected a positive number"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\n[timing]\nrounds = 3\n', "unknown key 'timing.rounds'"),
    ('[sweep]\nimpls = ["numpy"]\nseq_len = 8\n[extra]\n', "unknown key 'extra'"),
    ('[sweep\nimpls = 1', "not valid TOML"),
    ('name = "x"\n', "missing table [sweep]"),
])
def test_bad_suites_fail_with_file_key_and_expectation(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(str(path), KNOWN)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_suite_file_names_the_built_in_suites(tmp_path):
    with pytest.raises(SuiteError, match="no such suite file.*smoke"):
        load_suite(str(tmp_path / "nope.toml"), KNOWN)


def test_built_in_suites_are_valid():
    from harness import registry
    known = set(registry.adapters())
    for name in ("default", "smoke"):
        assert load_suite(name, known).cases()


def test_impls_all_means_every_implementation_of_the_suite_s_levels(tmp_path):
    levels = {"numpy": "kernel", "torch.sdpa": "kernel", "torch.mha": "mha"}
    path = write(tmp_path, '[sweep]\nimpls = "all"\nseq_len = 8\n')
    assert {c.impl for c in load_suite(str(path), levels).cases()} == {"numpy", "torch.sdpa"}
    path = write(tmp_path, '[sweep]\nimpls = "all"\nlevel = "encoder"\nseq_len = 8\n')
    with pytest.raises(SuiteError, match="no implementation of level encoder"):
        load_suite(str(path), levels)

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


# ---- one definition of a problem -----------------------------------------------------------

def test_every_case_field_is_a_sweep_key_with_a_role():
    """A new Case field is a sweep key and part of every problem key unless it says otherwise."""
    import dataclasses

    from harness.case import CONFIG_FIELDS, REPLICATE_FIELDS, SHAPE_FIELDS
    from harness.spec import SWEEP_KEYS

    for f in dataclasses.fields(Case):
        assert ("impls" if f.name == "impl" else f.name) in SWEEP_KEYS, f.name
        if f.metadata["role"] == "config":
            assert f.name in CONFIG_FIELDS and f.name in SHAPE_FIELDS
    assert set(REPLICATE_FIELDS) <= set(SHAPE_FIELDS) and "seed" not in CONFIG_FIELDS


def test_default_axes_stay_out_of_the_case_id():
    plain = Case(impl="numpy", heads=8, seq_len=64, head_dim=16, causal=True)
    assert Case(impl="numpy", heads=8, kv_heads=8, seq_len=64, head_dim=16, causal=True,
                causal_align="bottom_right").case_id == plain.case_id  # square: one problem
    grouped = Case(impl="numpy", heads=8, kv_heads=2, seq_len=1, seq_len_kv=64, head_dim=16,
                   causal=True, causal_align="bottom_right")
    assert grouped.case_id == plain.case_id.replace("n64x64", "n1x64") + "/kvh2/br"
    assert grouped.problem_key != Case(**{**grouped.to_dict(), "kv_heads": 4}).problem_key


@pytest.mark.parametrize("body, words", [
    ('heads = 8\nkv_heads = [3]', ["sweep.kv_heads", "multiple of kv_heads"]),
    ('level = "kernel"\nnorm = ["pre"]', ["sweep.norm", "encoder blocks"]),
    ('level = "mha"\nimpls = ["numpy"]\nseq_len_kv = [64]', ["sweep.seq_len_kv", "self-attention"]),
    ('causal = true\nseq_len_kv = [64]', ["sweep.causal_align", "ambiguous", "top_left",
                                          "bottom_right", "Nk - Nq + i"]),
])
def test_a_sweep_whose_values_reach_no_valid_case_fails_naming_the_key(tmp_path, body, words):
    lines = {"impls": '["numpy"]', "seq_len": "[16]"}
    text = "[sweep]\n" + "\n".join(f"{k} = {v}" for k, v in lines.items()
                                    if f"{k} =" not in body) + "\n" + body + "\n"
    with pytest.raises(SuiteError) as err:
        load_suite(str(write(tmp_path, text)), KNOWN)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path))
    for word in words:
        assert word in message, message


def test_a_mixed_level_sweep_keeps_each_axis_where_it_applies(tmp_path):
    path = write(tmp_path, """
[sweep]
impls = ["numpy"]
level = ["kernel", "encoder"]
norm = ["post", "pre"]
seq_len = [16]
""")
    cases = load_suite(str(path), KNOWN).cases()
    assert {(c.level, c.norm) for c in cases} == {("kernel", "post"), ("encoder", "post"),
                                                  ("encoder", "pre")}


def test_both_alignments_of_a_square_problem_are_one_case(tmp_path):
    path = write(tmp_path, """
[sweep]
impls = ["numpy"]
seq_len = [16]
seq_len_kv = [16, 64]
causal = true
causal_align = ["top_left", "bottom_right"]
""")
    cases = load_suite(str(path), KNOWN).cases()
    assert sorted((c.seq_len_kv, c.causal_align) for c in cases) == [
        (16, "top_left"), (64, "bottom_right"), (64, "top_left")]


def test_variants_lay_partial_sweeps_over_the_sweep(tmp_path):
    """One modifier at a time: each [[variants]] table overrides the sweep's keys it names."""
    path = write(tmp_path, """
[sweep]
impls = ["numpy"]
seq_len = [64, 128]
causal = true
[[variants]]
[[variants]]
window = 16
[[variants]]
softcap = 20.0
alibi = [false, true]
""")
    cases = load_suite(str(path), KNOWN).cases()
    mods = sorted({(c.window, c.softcap, c.alibi) for c in cases})
    assert mods == [(0, 0.0, False), (0, 20.0, False), (0, 20.0, True), (16, 0.0, False)]
    assert len(cases) == 4 * 2


@pytest.mark.parametrize("body, words", [
    ("[[variants]]\nwindow = 512", ["[[variants]] 1", "sweep.window", "covers all"]),
    ("[[variants]]\nwobble = 1", ["[[variants]] 1", "unknown key 'sweep.wobble'"]),
    ("variants = 3", ["key 'variants': expected [[variants]] tables"]),
])
def test_a_bad_variant_is_refused_naming_it(tmp_path, body, words):
    sweep = '[sweep]\nimpls = ["numpy"]\nseq_len = [64]\ncausal = true\n'
    text = body + "\n" + sweep if body.startswith("variants") else sweep + body + "\n"
    with pytest.raises(SuiteError) as err:
        load_suite(str(write(tmp_path, text)), KNOWN)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_the_alignment_is_asked_only_of_the_variants_that_need_it(tmp_path):
    head = '[sweep]\nimpls = ["numpy"]\nseq_len = [16]\ncausal = true\n'
    square = '[[variants]]\nseq_len_kv = [16]\n'  # prefill: one problem under either alignment
    decode = '[[variants]]\nseq_len = [1]\nseq_len_kv = [64]\ncausal_align = "bottom_right"\n'
    cases = load_suite(str(write(tmp_path, head + square + decode)), KNOWN).cases()
    assert {(c.seq_len, c.seq_len_kv, c.causal_align) for c in cases} == {
        (16, 16, "top_left"), (1, 64, "bottom_right")}
    unsaid = '[[variants]]\nseq_len = [1]\nseq_len_kv = [64]\n'
    with pytest.raises(SuiteError, match="sweep.causal_align"):
        load_suite(str(write(tmp_path, head + decode + unsaid)), KNOWN)

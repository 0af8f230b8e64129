"""Headline figures over matched sets: a shape counts only where every implementation compared
in its configuration has an ok, stable record; the shapes left out are named with why."""
from harness.analysis.summary import matched_shapes
from harness.report import tables
from test_report import record


def sweep(impl, ns=(128, 256, 512), scale=1.0, **extra):
    return [record(impl, n, median=scale * 1e-9 * n * n, **extra) for n in ns]


def test_an_oom_or_an_unstable_figure_takes_its_shape_out_of_the_headlines():
    records = (sweep("fast", scale=1.0) + sweep("slow", scale=2.0, ns=(128, 256))
               + [record("slow", 512, status="oom", reason="out of memory")]
               + sweep("shaky", scale=3.0, ns=(128,))
               + [record("shaky", n, median=1e-3, stable=False, instability="contended")
                  for n in (256, 512)])
    matched, gone = matched_shapes(records)
    assert len(matched) == 1  # only N=128 has all three ok and stable
    assert {(g["seq_len"], g["why"]) for g in gone} == {(256, "shaky unstable"),
                                                        (512, "shaky unstable, slow oom")}
    (head,) = tables.headlines(records, "slow")
    assert head["seq_len"] == 128 and head["impl"] == "fast" and head["impls"] == 3
    rows = {r["impl"]: r for r in tables.impl_summary(records)}
    assert (rows["fast"]["fastest"], rows["fast"]["contested"]) == (1, 1)
    assert tables.left_out(records) == [
        "float32 full: N=256 (shaky unstable); N=512 (shaky unstable, slow oom)"]


def test_an_implementation_that_never_ran_in_a_configuration_is_not_compared_there():
    records = (sweep("a") + sweep("b", scale=2.0)
               + [record("c", n, status="unsupported", reason="no") for n in (128, 256, 512)])
    matched, gone = matched_shapes(records)
    assert len(matched) == 3 and gone == []
    (head,) = tables.headlines(records, "b")
    assert head["seq_len"] == 512 and head["vs_baseline"] == 2.0

"""Kernel adapters that each ignore one part of the problem while declaring they take it: a
sliding window, ALiBi, the bias, the soft cap, the key padding (or a ragged batch's lengths).
The harness must call each a mismatch, never ok: the proof that every modifier is checked.

Each computes the NumPy seed formula (impls/numpy_ref.py, every modifier dense) on the case with
that one part switched off. Registered by tests/test_adapters.py (or with
ATTNBENCH_PLUGINS=tests.plugins.wrong_modifiers).
"""
from __future__ import annotations

import dataclasses

from harness.case import CONSTANT, NO_BIAS
from impls.numpy_ref import NumpyAttention


class Ignores(NumpyAttention):
    """The seed formula on the case with `switched_off` fields at their defaults."""

    switched_off: dict = {}

    def prepare(self, case, inputs):
        return super().prepare(dataclasses.replace(case, **self.switched_off), inputs)


def ignoring(what: str, **switched_off) -> Ignores:
    cls = type(f"Ignores{what.title().replace('_', '')}", (Ignores,),
               {"name": f"test.wrong.ignores_{what}", "switched_off": switched_off,
                "description": f"test adapter: declares {what} and ignores it"})
    return cls()


ADAPTERS = [
    ignoring("window", window=0),
    ignoring("alibi", alibi=False),
    ignoring("bias", bias=NO_BIAS),
    ignoring("softcap", softcap=0.0),
    ignoring("padding", padding=0.0, lengths=CONSTANT),
]

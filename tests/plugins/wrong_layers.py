"""Deliberately wrong layer adapters, for tests that the harness catches them (mismatch).

Registered with ATTNBENCH_PLUGINS=tests.plugins.wrong_layers (the TensorFlow child process
of the tests uses it; the torch ones are also registered directly by the tests).
"""
from __future__ import annotations

from impls.encoders import NaiveMHA, TorchMHA
from impls.keras_encoders import KerasMHA


class TorchMHAUntransposed(TorchMHA):
    """Loads Wq as torch would store W for x @ W (forgetting that nn.Linear keeps Wᵀ)."""

    name = "test.wrong.torch_mha_layout"

    def weight_map(self, case):
        return [(ref, param, rows, transposed if ref != "wq" else not transposed)
                for ref, param, rows, transposed in super().weight_map(case)]


class NaiveMHADoubleScaled(NaiveMHA):
    """The seeds' bug: scores divided by √d_k twice."""

    name = "test.wrong.naive_mha_double_scaled"

    def build(self, case, factory, labels):
        import math

        module = super().build(case, factory, labels)
        inner = module.scaled_dot_product_attention

        def twice(q, k, v, mask=None):
            return inner(q / math.sqrt(module.d_k), k, v, mask)

        module.scaled_dot_product_attention = twice
        return module


class KerasMHATransposed(KerasMHA):
    """Loads Wq in torch's (out, in) layout into Keras' (d_model, heads, head_dim) kernel."""

    name = "test.wrong.keras_mha_layout"

    def prepare(self, case, inputs):
        return super().prepare(case, {**inputs, "wq": inputs["wq"].T.copy()})


class KerasMHAHeadsSwapped(KerasMHA):
    """Reshapes Wq as (d_model, head_dim, heads): every head gets interleaved columns."""

    name = "test.wrong.keras_mha_heads"

    def prepare(self, case, inputs):
        d, h, hd = case.d_model, case.heads, case.head_dim
        wrong = inputs["wq"].reshape(d, hd, h).transpose(0, 2, 1).reshape(d, d)
        return super().prepare(case, {**inputs, "wq": wrong})


ADAPTERS = [TorchMHAUntransposed(), NaiveMHADoubleScaled(), KerasMHATransposed(),
            KerasMHAHeadsSwapped()]

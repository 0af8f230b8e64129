"""The Adapter protocol: what an implementation declares and the two calls the harness makes.

Adapters own the call and nothing else. They never time, measure or catch: the harness does
that the same way for every implementation. Framework imports happen inside methods, never at
module top level, so `attnbench list` works with only the base install.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from harness.case import BOTTOM_RIGHT, CONSTANT, NO_BIAS, PACKED
from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PACKED, FEATURE_PADDING,
                               FEATURE_SOFTCAP, FEATURE_WINDOW, FEATURES)
from harness.spec import case_problem


TO_BNHD = (0, 2, 1, 3)  # (B, H, N, D) <-> (B, N, H, D); the permutation is its own inverse


def no_op() -> None:
    """What `sync` and `close` are when there is nothing to wait for or to leave."""
    return None


# Each optional problem feature: whether a case needs it, and what a user is told when an
# implementation does not take it (name, case) -> reason.
FEATURE_NEEDS: dict[str, tuple[Callable[[Any], bool], Callable[[str, Any], str]]] = {
    FEATURE_KV_HEADS: (
        lambda case: case.kv_heads != case.heads,
        lambda name, case: (f"{name} takes no grouped K/V heads (kv_heads {case.kv_heads} of "
                            f"heads {case.heads})")),
    FEATURE_BOTTOM_RIGHT: (
        lambda case: case.causal_align == BOTTOM_RIGHT,  # Case keeps it for causal Nq != Nk only
        lambda name, case: (f"{name} cannot align a causal mask bottom-right (seq_len "
                            f"{case.seq_len}, seq_len_kv {case.seq_len_kv})")),
    FEATURE_PADDING: (
        lambda case: case.padding > 0 or case.lengths != CONSTANT,
        lambda name, case: (
            f"{name} takes no key-padding mask (padding {case.padding:g})" if case.padding else
            f"{name} takes no ragged batch (lengths {case.lengths}: each sequence's padded "
            f"tokens must be masked); lengths = constant runs it")),
    FEATURE_PACKED: (
        lambda case: case.layout == PACKED,
        lambda name, case: (f"{name} takes no packed batch (layout {PACKED}: the sequences "
                            f"end to end); layout = padded gives it the same problem padded")),
    FEATURE_WINDOW: (
        lambda case: case.window > 0,
        lambda name, case: f"{name} takes no sliding-window mask (window {case.window})"),
    FEATURE_ALIBI: (
        lambda case: case.alibi,
        lambda name, case: f"{name} takes no ALiBi bias (alibi = true)"),
    FEATURE_BIAS: (
        lambda case: case.bias != NO_BIAS,
        lambda name, case: f"{name} takes no additive score bias (bias {case.bias})"),
    FEATURE_SOFTCAP: (
        lambda case: case.softcap > 0,
        lambda name, case: f"{name} takes no logit soft-capping (softcap {case.softcap:g})"),
}
assert set(FEATURE_NEEDS) == set(FEATURES)


def case_features(case) -> frozenset[str]:
    """The optional features a case needs of whatever implementation runs it."""
    return frozenset(f for f, (needs, _) in FEATURE_NEEDS.items() if needs(case))


@dataclass
class Prepared:
    """A case made ready to run: everything that is not the operation already happened.

    `call` runs the operation once and returns its output; `sync` waits for device work;
    `to_numpy` converts an output to a float64 NumPy array in the reference layout
    (kernels: batch, heads, seq, head_dim; layers: batch, seq, d_model); `out_dtype` names the
    dtype of an output or gradient ("float32", ...); `close` undoes whatever `prepare` entered
    (a backend context, for instance); `kernel` names the backend the call is pinned to, if any
    (the harness checks that it really ran); `compiled` says the first call traces and compiles
    (the harness times it apart, as compile_s); `info` is what the implementation says about
    itself (a setup step's time, a mask's sparsity), the record's `impl_info`.

    Mode fwd_bwd: `call` runs the forward and the backward of the loss sum(out · G) from
    scratch (no gradient accumulated from an earlier call) and returns (output, grads), grads a
    dict from the reference's names (q, k, v; or x and the weight names of harness.problem.layers) to
    the framework's gradients; `grads_to_numpy` turns that dict into float64 arrays in the
    reference's layouts (default: `to_numpy` on each, right when they share the output's).
    """

    call: Callable[[], Any]
    to_numpy: Callable[[Any], np.ndarray]
    out_dtype: Callable[[Any], str]
    sync: Callable[[], None] = no_op
    close: Callable[[], None] = no_op
    kernel: str | None = None
    grads_to_numpy: Callable[[dict], dict] | None = None
    compiled: bool = False
    info: dict | None = None

    def __post_init__(self):
        if self.grads_to_numpy is None:
            to_numpy = self.to_numpy
            self.grads_to_numpy = lambda grads: {n: to_numpy(g) for n, g in grads.items()}


class Adapter:
    """Base class with the declarative checks; subclasses set the class attributes below.

    `unsupported(case)` returns reasons a user can act on (empty means the case can run).
    The declarative part (level, device, dtype, mode, optional features, missing package) is
    checked here; `library_reasons` lets an adapter ask its library why it cannot run a case.
    """

    name: ClassVar[str]
    # worker family (harness.run.process.FAMILIES): "numpy", "torch", "tensorflow", "jax",
    # "keras-jax", "keras-torch"; each runs in processes of its own
    framework: ClassVar[str]
    level: ClassVar[str] = "kernel"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    modes: ClassVar[tuple[str, ...]] = ("fwd",)
    requires: ClassVar[tuple[str, ...]] = ()  # importable module names
    install_hint: ClassVar[str] = ""
    # which kernel ran, asked by the harness (harness.measure.kernels): None, "sdpa" (torch's
    # SDPA dispatch), "torch_module" (a torch layer's fast path and its SDPA backend) or
    # "compiled" (whether torch.compile's code really ran)
    kernel_probe: ClassVar[str | None] = None
    labels: ClassVar[bool] = False  # prepare(case, inputs, labels=True) marks profiler regions
    # the optional problem features it takes (harness.constants.FEATURES; case_features says
    # which a case needs): grouped K/V heads, a bottom-right causal mask, key padding (or a
    # ragged batch), a packed batch, a sliding window, ALiBi, a score bias, soft-capping
    features: ClassVar[frozenset[str]] = frozenset()
    # why the library cannot take a feature it lacks, added to the base class's reason
    # ({feature: text}): what the user would otherwise have to find out in its source
    feature_notes: ClassVar[dict[str, str]] = {}
    # takes only packed batches (its call has no padded form, as a varlen kernel's)
    packed_only: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = (set(cls.features) | set(cls.feature_notes)) - set(FEATURES)
        if unknown:
            raise TypeError(f"{cls.__name__} declares unknown features {sorted(unknown)}: "
                            f"expected some of {', '.join(FEATURES)}")

    def missing_packages(self) -> list[str]:
        """Required modules that cannot be found, without importing them."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def static_reasons(self, case) -> list[str]:
        """Reasons known without importing the framework."""
        reasons = []
        if case.level != self.level:
            reasons.append(f"{self.name} is a {self.level}-level implementation, case is {case.level}")
        if case.device.split(":")[0] not in self.devices:
            reasons.append(f"{self.name} runs on {', '.join(self.devices)}, not {case.device}")
        if case.dtype not in self.dtypes:
            reasons.append(f"{self.name} supports dtypes {', '.join(self.dtypes)}, not {case.dtype}")
        if case.mode not in self.modes:
            reasons.append(f"{self.name} supports modes {', '.join(self.modes)}, not {case.mode}")
        for feature in sorted(case_features(case) - self.features, key=FEATURES.index):
            note = self.feature_notes.get(feature)
            said = FEATURE_NEEDS[feature][1](self.name, case)
            reasons.append(f"{said}: {note}" if note else said)
        if self.packed_only and case.layout != PACKED:
            reasons.append(f"{self.name} takes packed batches only (layout {PACKED}), not "
                           f"{case.layout}")
        invalid = case_problem(case)  # a case built outside a suite, which would refuse it
        if invalid:
            reasons.append(invalid[1])
        missing = self.missing_packages()
        if missing:
            reasons.append(f"{', '.join(missing)} not installed: {self.install_hint}")
        return reasons

    def library_reasons(self, case) -> list[str]:
        """Ask the library itself; called in the worker, only when static checks pass."""
        return []

    def unsupported(self, case) -> list[str]:
        return self.static_reasons(case) or self.library_reasons(case)

    def prepare(self, case, inputs: dict[str, np.ndarray]) -> Prepared:
        raise NotImplementedError


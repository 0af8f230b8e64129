"""A torch function `f(q, k, v, *, causal, scale)` run as an implementation: a kernel author
benchmarks their attention without writing an adapter class (`attnbench run --fn MODULE:FUNCTION`,
or `fn` in a suite's [sweep]; harness.registry loads it in every worker by that path).

q, k and v reach the function as contiguous (batch, heads, seq, head_dim) tensors of the case's
dtype on its device, and it returns the output in that layout. `causal=True` means SDPA's
`is_causal`: top-left, query i sees keys 0..i (the only alignment a bool can say; a non-square
case aligned bottom-right is refused). `scale` is 1/sqrt(head_dim).

The call carries nothing else, so the function takes no optional problem feature: a case with
key padding, a window, ALiBi, a bias or a soft cap is `unsupported` with the reason, never run
without it. Grouped K/V heads need no other argument (k and v arrive with fewer heads), so a
function may declare them, and a backward pass, as attributes:
`f.attnbench_features = {"kv_heads"}`, `f.attnbench_modes = ("fwd", "fwd_bwd")` (torch
autograd through the function).
"""
from __future__ import annotations

import inspect
import math

from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS,
                               FEATURE_PACKED, FEATURE_PADDING, FEATURE_SOFTCAP, FEATURE_WINDOW,
                               MODES)
from harness.spec import function_impl
from impls._torch import TorchAdapter, prepared, to_device

CALL = "f(q, k, v, *, causal: bool, scale: float)"
CARRIED_FEATURES = frozenset({FEATURE_KV_HEADS})  # what the call's tensors can carry unaided
UNCARRIED = f"the call {CALL} carries no {{what}}: an adapter class (docs/adapters.md) can"
# why a function takes each feature it does not declare: what the call cannot say
FUNCTION_NOTES = {
    FEATURE_KV_HEADS: ("k and v would arrive with fewer heads than q; a function that takes "
                       "them says so with f.attnbench_features = {'kv_heads'}"),
    FEATURE_BOTTOM_RIGHT: ("the call's causal is a bool meaning SDPA's is_causal (top-left); "
                           "it cannot say bottom-right"),
    FEATURE_PADDING: UNCARRIED.format(what="key-padding mask or sequence lengths"),
    FEATURE_PACKED: UNCARRIED.format(what="packed tokens or offsets (q, k, v arrive padded)"),
    FEATURE_WINDOW: UNCARRIED.format(what="window size"),
    FEATURE_ALIBI: UNCARRIED.format(what="ALiBi slopes"),
    FEATURE_BIAS: UNCARRIED.format(what="score bias"),
    FEATURE_SOFTCAP: UNCARRIED.format(what="soft cap"),
}


def call_problem(function) -> str | None:
    """Why `function` cannot take the call CALL (its signature says so), or None."""
    if not callable(function):
        return f"is a {type(function).__name__}, not a function: expected {CALL}"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        return f"has no signature to check ({exc}): expected {CALL}"
    try:
        signature.bind(None, None, None, causal=False, scale=1.0)
    except TypeError as exc:
        return f"takes {signature}, not {CALL}: {exc}"
    return None


def _declared(function, attribute: str, allowed, default) -> tuple[str, ...]:
    """An attnbench_* attribute of the function, each item one of `allowed` (ValueError)."""
    given = getattr(function, attribute, default)
    items = (given,) if isinstance(given, str) else tuple(given)
    wrong = [item for item in items if item not in allowed]
    if wrong:
        raise ValueError(f"{attribute} lists {wrong[0]!r}: expected some of "
                         f"{', '.join(sorted(allowed))}")
    return items


class TorchFunction(TorchAdapter):
    """One user function; the instance says what it declares (features, modes)."""

    feature_notes = FUNCTION_NOTES

    def __init__(self, path: str, function):
        """ValueError (one line) when the function cannot take the call or declares what the
        call cannot carry."""
        problem = call_problem(function)
        if problem:
            raise ValueError(problem)
        self.name = function_impl(path)
        self.function = function
        self.features = frozenset(_declared(function, "attnbench_features", CARRIED_FEATURES, ()))
        self.modes = _declared(function, "attnbench_modes", MODES, ("fwd",))
        doc = (inspect.getdoc(function) or "").strip().splitlines()
        self.description = f"torch function {path}" + (f": {doc[0]}" if doc else "")

    def prepare(self, case, inputs):
        q, k, v = to_device(case, inputs)
        function = self.function
        options = {"causal": case.causal, "scale": 1.0 / math.sqrt(case.head_dim)}
        return prepared(case, lambda: function(q, k, v, **options),
                        wrt={"q": q, "k": k, "v": v}, inputs=inputs)

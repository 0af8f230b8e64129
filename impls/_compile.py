"""torch.compile plumbing shared by the compiled adapters (impls/torch_compiled.py,
impls/torch_flex.py): a fresh whole-graph static compilation per case, and the context that
turns any quiet fallback to eager code into an error."""
from __future__ import annotations

import contextlib
import warnings

from harness.constants import FEATURE_BOTTOM_RIGHT, FEATURE_KV_HEADS
from impls._torch import TorchAdapter, prepared, to_device

# torch's words when flex_attention runs outside torch.compile (its unfused, N x N path)
UNFUSED_WARNING = "flex_attention called without torch.compile"


def compile_static(fn):
    """`fn` under torch.compile (inductor, whole graph, static shapes), with nothing cached from
    an earlier case."""
    import torch

    torch.compiler.reset()
    return torch.compile(fn, fullgraph=True, dynamic=False)


def strict(close=None) -> contextlib.ExitStack:
    """Entered in `prepare`, left by `close`: a recompilation raises, and FlexAttention's
    unfused-fallback warning is raised as an error (the harness records `error`)."""
    import torch

    stack = contextlib.ExitStack()
    if close is not None:  # what was entered before is left last
        stack.callback(close)
    # one compiled entry per case; at the limit dynamo raises instead of running eager
    stack.enter_context(torch._dynamo.config.patch(recompile_limit=1,
                                                   fail_on_recompile_limit_hit=True))
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("error", message=UNFUSED_WARNING)
    return stack


class CompiledKernel(TorchAdapter):
    """A kernel-level formula under torch.compile; subclasses give the eager function."""

    modes = ("fwd", "fwd_bwd")
    kernel_probe = "compiled"
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT})

    def function(self, case, q, k, v, inputs):
        """(fn, extra positional arguments after q, k, v, info or None), given the prepared
        q, k, v and the case's inputs."""
        raise NotImplementedError

    def prepare(self, case, inputs):
        q, k, v = to_device(case, inputs)
        fn, extra, info = self.function(case, q, k, v, inputs)
        compiled = compile_static(fn)
        context = strict()
        return self.finish(case, lambda: compiled(q, k, v, *extra), context, inputs,
                           {"q": q, "k": k, "v": v}, info)

    def finish(self, case, call, context, inputs, wrt, info=None):
        out = prepared(case, call, close=context.close, kernel="inductor", wrt=wrt, inputs=inputs)
        out.compiled, out.info = True, info or None
        return out

"""`torch.nn.functional.scaled_dot_product_attention`: the dispatcher's choice, and each backend pinned.

Pinning uses `torch.nn.attention.sdpa_kernel`, entered in `prepare` and exited in `close`, so
entering the context is never part of the timed call. Whether a pinned backend can run a case
is asked of torch itself with a trial call, and torch's own words become the reason.

Grouped K/V heads go in as they are (`enable_gqa`); a bottom-right causal mask as torch's
`causal_lower_right` or a boolean mask; key padding, a ragged batch and a window as a boolean
`attn_mask`; ALiBi and a bias as a float `attn_mask` that carries the masks too
(`impls._torch.sdpa_options` says which, and why; `Prepared.info` says what the mask is and
which backends take it). A backend that cannot take it is refused by its trial call when
pinned; the dispatcher falls back (to math, say), and the record's `kernel`, read from the
profiler, names what ran. The soft cap SDPA cannot take: its mask is added to the scaled
scores, and a tanh of them has no additive form. A packed batch goes through SDPA on nested
tensors (impls/torch_packed.py, torch.sdpa.nested).
"""
from __future__ import annotations

import contextlib
import warnings

from harness.constants import (FEATURE_ALIBI, FEATURE_BIAS, FEATURE_BOTTOM_RIGHT,
                               FEATURE_KV_HEADS, FEATURE_PADDING, FEATURE_SOFTCAP, FEATURE_WINDOW)
from impls._masks import trial_case
from impls._torch import (TorchAdapter, device_reasons, prepared, sdpa_mask_info, sdpa_options,
                          to_device)

SOFTCAP_NOTE = ("SDPA adds its attn_mask to the scaled scores, and a tanh of the scores has no "
                "additive form; torch.flex takes it as a score_mod")

# id, SDPBackend member (None: the dispatcher chooses), description
SDPA_VARIANTS = (
    ("torch.sdpa", None, "PyTorch SDPA, backend chosen by torch's dispatcher."),
    ("torch.sdpa.math", "MATH", "PyTorch SDPA pinned to the math (unfused, composite) backend."),
    ("torch.sdpa.flash", "FLASH_ATTENTION", "PyTorch SDPA pinned to the FlashAttention backend."),
    ("torch.sdpa.efficient", "EFFICIENT_ATTENTION",
     "PyTorch SDPA pinned to the memory-efficient (xformers cutlass) backend."),
    ("torch.sdpa.cudnn", "CUDNN_ATTENTION", "PyTorch SDPA pinned to the cuDNN attention backend."),
)


class TorchSDPA(TorchAdapter):
    """One SDPA variant; instances differ only in the backend they pin (see SDPA_VARIANTS)."""

    kernel_probe = "sdpa"  # the harness asks the profiler which backend really ran
    modes = ("fwd", "fwd_bwd")  # backward: torch autograd, through the same backend
    features = frozenset({FEATURE_KV_HEADS, FEATURE_BOTTOM_RIGHT, FEATURE_PADDING,
                          FEATURE_WINDOW, FEATURE_ALIBI, FEATURE_BIAS})
    feature_notes = {FEATURE_SOFTCAP: SOFTCAP_NOTE}

    def __init__(self, name: str, backend: str | None, description: str):
        self.name = name
        self.backend = backend
        self.description = description
        self.kernel = backend.lower() if backend else None  # e.g. "flash_attention"

    def _backend_context(self):
        if self.backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, self.backend))

    def library_reasons(self, case) -> list[str]:
        """A trial call on zeros (batch 1; one K/V head and its query group) under the pinned
        backend, with the case's mask and head options; torch says why not.

        The math backend, and the dispatcher (which falls back to math), accept every case;
        a trial for them would only materialise the N x N scores, so they are not asked.
        """
        reasons = device_reasons(case)
        if reasons or self.backend in (None, "MATH"):
            return reasons
        import torch
        import torch.nn.functional as F

        options = {"device": case.device, "dtype": getattr(torch, case.dtype)}
        q = torch.zeros(1, case.group_size, case.seq_len, case.head_dim, **options)
        kv = torch.zeros(1, 1, case.seq_len_kv, case.head_dim, **options)
        trial, inputs = trial_case(case)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with self._backend_context():
                    F.scaled_dot_product_attention(q, kv, kv,
                                                   **sdpa_options(trial, q, kv, kv, inputs))
            except torch.cuda.OutOfMemoryError:
                raise  # the case itself would not fit: let the harness call it oom
            except RuntimeError as exc:
                said = " ".join(str(exc).split())
                notes = "; ".join(" ".join(str(w.message).split()) for w in caught)
                return [f"torch has no SDPBackend.{self.backend} kernel for this case on "
                        f"{case.device}: {said}" + (f" ({notes})" if notes else "")]
        return []

    def prepare(self, case, inputs):
        import torch.nn.functional as F

        q, k, v = to_device(case, inputs)
        with contextlib.ExitStack() as entering:
            entering.enter_context(self._backend_context())
            # under the pin: it asks what the pin allows
            options = sdpa_options(case, q, k, v, inputs)
            backend = entering.pop_all()  # left by Prepared.close
        return prepared(
            case,
            lambda: F.scaled_dot_product_attention(q, k, v, **options),
            close=backend.close,
            kernel=self.kernel,
            wrt={"q": q, "k": k, "v": v},
            inputs=inputs,
            info=sdpa_mask_info(case, options, q, k, v),
        )


# SDPA on nested tensors and the varlen kernel (packed batches) register with SDPA's variants
ADAPTERS = [TorchSDPA(*variant) for variant in SDPA_VARIANTS]

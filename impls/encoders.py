"""Multi-head attention layers (level `mha`) and Transformer encoder blocks (level `encoder`)
in PyTorch: the library's modules, and the seeds' hand-written ones with their bugs fixed.

Every adapter builds its module in `prepare`, loads the harness's float64 weights into it (in
the module's own layout: torch stores a linear layer's weight as Wᵀ, nn.MultiheadAttention
keeps Wq, Wk, Wv stacked in one in_proj_weight), builds the masks, and returns a call that is
only the module's forward (fwd), or its forward and the backward of sum(out · G) through
`torch.autograd.grad` with respect to x and every parameter (fwd_bwd). Dropout is 0.

Modes of the library modules: `torch.mha` and `torch.encoder` run in training mode (the path
training takes; in fwd under torch.no_grad, as inference code would); `torch.mha.eval` and
`torch.encoder.eval` run in eval mode under torch.inference_mode, where torch takes its fused
fast path (aten::_native_multi_head_attention, aten::_transformer_encoder_layer_fwd) if the
case allows it; the record's `kernel` says whether it did (e.g. odd head counts do not).
"""
from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

from harness.constants import FEATURE_PADDING
from harness.problem.inputs import case_keep, key_padding
from impls._torch import TorchAdapter, prepared, tensor


def _mha_map(prefix: str, d: int, fused: bool) -> list[tuple]:
    """(reference name, parameter name, rows or None, transposed) for the attention weights."""
    if fused:  # nn.MultiheadAttention: [Wqᵀ; Wkᵀ; Wvᵀ] in one (3d, d) parameter
        rows = {"q": slice(0, d), "k": slice(d, 2 * d), "v": slice(2 * d, 3 * d)}
        out = []
        for p in "qkv":
            out += [(f"w{p}", f"{prefix}in_proj_weight", rows[p], True),
                    (f"b{p}", f"{prefix}in_proj_bias", rows[p], False)]
        return out + [("wo", f"{prefix}out_proj.weight", None, True),
                      ("bo", f"{prefix}out_proj.bias", None, False)]
    out = []
    for p in "qkvo":
        out += [(f"w{p}", f"{prefix}W_{p}.weight", None, True),
                (f"b{p}", f"{prefix}W_{p}.bias", None, False)]
    return out


def _block_map(ff1: str, ff2: str) -> list[tuple]:
    """The feed-forward and LayerNorm parameters of an encoder block."""
    return [("ln1_g", "norm1.weight", None, False), ("ln1_b", "norm1.bias", None, False),
            ("w1", f"{ff1}.weight", None, True), ("b1", f"{ff1}.bias", None, False),
            ("w2", f"{ff2}.weight", None, True), ("b2", f"{ff2}.bias", None, False),
            ("ln2_g", "norm2.weight", None, False), ("ln2_b", "norm2.bias", None, False)]


def load_weights(module, weight_map, inputs) -> None:
    """Copy the reference weights into the module's parameters (rounded to their dtype)."""
    import torch

    params = dict(module.named_parameters())
    with torch.no_grad():
        for ref, name, rows, transposed in weight_map:
            value = inputs[ref].T if transposed else inputs[ref]
            target = params[name] if rows is None else params[name][rows]
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _to_reference(weight_map):
    """grads_to_numpy: {"x": ..., parameter name: ...} -> reference names and layouts."""
    import torch

    def convert(grads):
        def f64(t):
            return t.detach().to(device="cpu", dtype=torch.float64).numpy()

        out = {"x": f64(grads["x"])}
        for ref, name, rows, transposed in weight_map:
            g = grads[name] if rows is None else grads[name][rows]
            out[ref] = f64(g.T if transposed else g)
        return out

    return convert


@functools.cache
def _naive_modules():
    """The seeds' modules, written out as a first version would be, with their bugs fixed:
    one 1/√d_k scaling (not two), heads really split (view + transpose) and merged back."""
    import torch
    from torch import nn

    no_label = contextlib.nullcontext

    class MultiHeadAttention(nn.Module):
        def __init__(self, d_model, num_heads, label=no_label, **factory):
            super().__init__()
            self.num_heads, self.d_k = num_heads, d_model // num_heads
            self.W_q = nn.Linear(d_model, d_model, **factory)
            self.W_k = nn.Linear(d_model, d_model, **factory)
            self.W_v = nn.Linear(d_model, d_model, **factory)
            self.W_o = nn.Linear(d_model, d_model, **factory)
            self.label = label

        def split_heads(self, x):  # (B, N, d_model) -> (B, H, N, d_k)
            b, n, _ = x.shape
            return x.view(b, n, self.num_heads, self.d_k).transpose(1, 2)

        def combine_heads(self, x):  # (B, H, N, d_k) -> (B, N, d_model)
            b, _, n, _ = x.shape
            return x.transpose(1, 2).contiguous().view(b, n, self.num_heads * self.d_k)

        def scaled_dot_product_attention(self, q, k, v, mask=None):
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
            if mask is not None:  # 1 (True) where a query may see a key
                scores = scores.masked_fill(mask == 0, -1e9)
            return torch.matmul(torch.softmax(scores, dim=-1), v)

        def forward(self, x, mask=None):
            q = self.split_heads(self.W_q(x))
            k = self.split_heads(self.W_k(x))
            v = self.split_heads(self.W_v(x))
            with self.label("attention.core"):
                out = self.scaled_dot_product_attention(q, k, v, mask)
            return self.W_o(self.combine_heads(out))

    class PositionWiseFeedForward(nn.Module):
        def __init__(self, d_model, d_ff, **factory):
            super().__init__()
            self.fc1 = nn.Linear(d_model, d_ff, **factory)
            self.fc2 = nn.Linear(d_ff, d_model, **factory)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.fc2(self.relu(self.fc1(x)))

    class EncoderLayer(nn.Module):
        def __init__(self, d_model, num_heads, d_ff, norm_first=False, label=no_label,
                     **factory):
            super().__init__()
            self.self_attn = MultiHeadAttention(d_model, num_heads, label, **factory)
            self.feed_forward = PositionWiseFeedForward(d_model, d_ff, **factory)
            self.norm1 = nn.LayerNorm(d_model, eps=1e-5, **factory)
            self.norm2 = nn.LayerNorm(d_model, eps=1e-5, **factory)
            self.norm_first = norm_first
            self.label = label  # torch.profiler.record_function when profiled

        def forward(self, x, mask=None):
            label = self.label
            if self.norm_first:
                with label("norm"):
                    n1 = self.norm1(x)
                with label("attention"):
                    a = self.self_attn(n1, mask)
                with label("residual"):
                    h = x + a
                with label("norm"):
                    n2 = self.norm2(h)
                with label("feed_forward"):
                    f = self.feed_forward(n2)
                with label("residual"):
                    return h + f
            with label("attention"):
                a = self.self_attn(x, mask)
            with label("residual"):
                r1 = x + a
            with label("norm"):
                h = self.norm1(r1)
            with label("feed_forward"):
                f = self.feed_forward(h)
            with label("residual"):
                r2 = h + f
            with label("norm"):
                return self.norm2(r2)

    return MultiHeadAttention, EncoderLayer


def _label_forwards(module, labels: dict) -> None:
    """Run named submodules' forwards inside torch.profiler.record_function(label).

    The forwards are wrapped on the instances, not hooked: nn.TransformerEncoderLayer turns its
    fast path off when any submodule has hooks, and the profile must see the path it measures.
    """
    from torch.profiler import record_function

    for name, label in labels.items():
        sub = module.get_submodule(name)

        def labelled(*args, _forward=sub.forward, _label=label, **kwargs):
            with record_function(_label):
                return _forward(*args, **kwargs)

        sub.forward = labelled


class TorchLayer(TorchAdapter):
    """Declarations and `prepare` shared by the torch layer adapters; subclasses say how to
    build the module, where each reference weight lives in it, and how to call it."""

    level = "mha"
    modes = ("fwd", "fwd_bwd")
    dtypes = ("float64", "float32", "bfloat16")
    features = frozenset({FEATURE_PADDING})
    eval_mode = False  # True: eval() under torch.inference_mode (torch's fast path, if it applies)
    labels = True  # prepare(..., labels=True) marks regions for `attnbench profile`

    def build(self, case, factory: dict, labels: bool):
        raise NotImplementedError

    def weight_map(self, case) -> list[tuple]:
        raise NotImplementedError

    def forward(self, module, x, masks: dict):
        raise NotImplementedError

    def runner(self, module):
        """What the timed call runs: the module itself (a compiled adapter compiles it)."""
        return module

    def masks(self, case) -> dict:
        """Boolean masks in nn.MultiheadAttention's convention: True means "may not attend"."""
        import torch

        out = {"attn_mask": None, "key_padding_mask": None, "is_causal": case.causal}
        if case.causal:
            upper = np.triu(np.ones((case.seq_len, case.seq_len_kv), dtype=bool), k=1)
            out["attn_mask"] = torch.from_numpy(upper).to(case.device)
        padded = key_padding(case)
        if padded is not None:
            out["key_padding_mask"] = torch.from_numpy(padded).to(case.device)
        return out

    def prepare(self, case, inputs, labels: bool = False):
        """`labels`: mark attention / feed_forward / norm regions for torch.profiler
        (harness.run.profile); never set for measurements."""
        import torch

        factory = {"device": case.device, "dtype": getattr(torch, case.dtype)}
        module = self.build(case, factory, labels)
        weight_map = self.weight_map(case)
        load_weights(module, weight_map, inputs)
        module.train(not self.eval_mode)
        backward = case.mode == "fwd_bwd"
        x = tensor(case, inputs["x"], grad=backward)
        masks = self.masks(case)
        run = self.runner(module)

        def forward():
            return self.forward(run, x, masks)

        context = contextlib.ExitStack()  # left by Prepared.close
        wrt = None
        if backward:
            wrt = {"x": x, **dict(module.named_parameters())}
        else:
            context.enter_context(torch.inference_mode() if self.eval_mode else torch.no_grad())
        return prepared(case, forward, close=context.close, wrt=wrt, inputs=inputs,
                        grads_to_numpy=_to_reference(weight_map))


class TorchLibraryLayer(TorchLayer):
    """nn.MultiheadAttention / nn.TransformerEncoderLayer: the record says what ran (the fast
    path or not, and the SDPA backend the module dispatched to)."""

    kernel_probe = "torch_module"


class TorchMHA(TorchLibraryLayer):
    name = "torch.mha"
    description = ("torch.nn.MultiheadAttention (batch_first, self-attention, need_weights=False), "
                   "training mode.")

    def build(self, case, factory, labels):
        import torch

        return torch.nn.MultiheadAttention(case.d_model, case.heads, dropout=0.0, bias=True,
                                           batch_first=True, **factory)

    def weight_map(self, case):
        return _mha_map("", case.d_model, fused=True)

    def forward(self, module, x, masks):
        return module(x, x, x, need_weights=False, attn_mask=masks["attn_mask"],
                      key_padding_mask=masks["key_padding_mask"], is_causal=masks["is_causal"])[0]


class TorchMHAEval(TorchMHA):
    name = "torch.mha.eval"
    description = ("torch.nn.MultiheadAttention in eval mode under torch.inference_mode: "
                   "torch's fused fast path where it applies.")
    modes = ("fwd",)
    eval_mode = True


class TorchEncoder(TorchLibraryLayer):
    name = "torch.encoder"
    level = "encoder"
    description = ("torch.nn.TransformerEncoderLayer (batch_first, ReLU, dropout 0), "
                   "training mode.")

    def build(self, case, factory, labels):
        import torch

        module = torch.nn.TransformerEncoderLayer(
            case.d_model, case.heads, dim_feedforward=case.ffn_mult * case.d_model, dropout=0.0,
            activation="relu", layer_norm_eps=1e-5, batch_first=True,
            norm_first=case.norm == "pre", **factory)
        if labels:
            _label_forwards(module, {"self_attn": "attention", "linear1": "feed_forward",
                                     "linear2": "feed_forward", "norm1": "norm", "norm2": "norm"})
        return module

    def weight_map(self, case):
        return _mha_map("self_attn.", case.d_model, fused=True) + _block_map("linear1", "linear2")

    def forward(self, module, x, masks):
        return module(x, src_mask=masks["attn_mask"],
                      src_key_padding_mask=masks["key_padding_mask"], is_causal=masks["is_causal"])


class TorchEncoderEval(TorchEncoder):
    name = "torch.encoder.eval"
    description = ("torch.nn.TransformerEncoderLayer in eval mode under torch.inference_mode: "
                   "its fused fast path where it applies.")
    modes = ("fwd",)
    eval_mode = True


class NaiveLayer(TorchLayer):
    """The seeds' hand-written modules: mask is one boolean tensor, 1 where a query sees a key."""

    def masks(self, case):
        import torch

        keep = case_keep(case)
        return {"mask": None if keep is None else torch.from_numpy(keep).to(case.device)}

    def forward(self, module, x, masks):
        return module(x, masks["mask"])


def _label(labels: bool):
    if not labels:
        return contextlib.nullcontext
    from torch.profiler import record_function

    return record_function


class NaiveMHA(NaiveLayer):
    name = "torch.mha.naive"
    description = ("The seeds' hand-written MultiHeadAttention in PyTorch (W_q, W_k, W_v, W_o, "
                   "split/merge heads), bugs fixed.")

    def build(self, case, factory, labels):
        mha, _ = _naive_modules()
        return mha(case.d_model, case.heads, _label(labels), **factory)

    def weight_map(self, case):
        return _mha_map("", case.d_model, fused=False)


class NaiveEncoder(NaiveLayer):
    name = "torch.encoder.naive"
    level = "encoder"
    description = ("The seeds' hand-written encoder layer in PyTorch: their MultiHeadAttention, "
                   "a ReLU feed-forward, residuals, LayerNorm.")

    def build(self, case, factory, labels):
        _, encoder = _naive_modules()
        return encoder(case.d_model, case.heads, case.ffn_mult * case.d_model,
                       norm_first=case.norm == "pre", label=_label(labels), **factory)

    def weight_map(self, case):
        return _mha_map("self_attn.", case.d_model, fused=False) + _block_map(
            "feed_forward.fc1", "feed_forward.fc2")


ADAPTERS = [TorchMHA(), TorchMHAEval(), NaiveMHA(), TorchEncoder(), TorchEncoderEval(),
            NaiveEncoder()]

"""Layer levels: seeded float64 weights, and the reference forward and backward of a multi-head
attention layer (`mha`) and of one Transformer encoder block (`encoder`), in NumPy.

Every framework loads these same weights (each in its own layout) and is compared with this
float64 reference, output and gradients, exactly as kernels are. Run in a lower `dtype`, the
same code is the naive same-dtype computation the tolerances are measured from: inputs and
weights rounded to the dtype, float32 accumulation, every stored intermediate rounded.
NumPy only: the TensorFlow worker runs it too, and must never import torch.

Reference layout (what adapters convert from and back to):
    x: (B, N, d_model), d_model = heads · head_dim, output the same shape.
    A linear layer is y = x @ W + b, W: (d_in, d_out) (torch stores Wᵀ; Keras stores W, its
    MultiHeadAttention as (d_model, heads, head_dim) and (heads, head_dim, d_model)).
    Heads split d_model into `heads` contiguous blocks of head_dim (torch's and Keras' way).
    mha:      wq bq wk bk wv bv (projections), wo bo (output projection); self-attention,
              softmax(q kᵀ/√head_dim + mask) v per head, one scaling.
    encoder:  the mha weights, then ln1_g ln1_b, w1 b1 (d_model -> ffn_mult·d_model, ReLU),
              w2 b2, ln2_g ln2_b. LayerNorm eps = 1e-5 (torch's default; Keras' is 1e-3 and
              the Keras adapter sets 1e-5). Dropout is off everywhere.
              post-norm (the seeds', torch's default): h = LN1(x + MHA(x)); y = LN2(h + FFN(h))
              pre-norm:  h = x + MHA(LN1(x));  y = h + FFN(LN2(h))
    Masks: causal (top-left aligned) and key padding (`harness.inputs.key_valid_lengths`):
    padded keys get no weight; padded queries are computed like any other row.
"""
from __future__ import annotations

import math

import numpy as np

from harness.problem.gradients import attention_backward
from harness.problem.inputs import key_valid_lengths, problem_seed
from harness.problem.reference import naive_attention, round_to, work_dtype

LN_EPS = 1e-5
MHA_WEIGHTS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo")
ENCODER_WEIGHTS = MHA_WEIGHTS + ("ln1_g", "ln1_b", "w1", "b1", "w2", "b2", "ln2_g", "ln2_b")
LAYER_LEVELS = ("mha", "encoder")


def through_relu(case) -> bool:
    """Do the case's gradients pass through a ReLU (the encoder's feed-forward)? Those are
    judged on their norm: see reference.norm_bound."""
    return case.level == "encoder"


def weight_names(level: str) -> tuple[str, ...]:
    return MHA_WEIGHTS if level == "mha" else ENCODER_WEIGHTS


def layer_inputs(case) -> dict[str, np.ndarray]:
    """x ~ N(0, 1); weights ~ N(0, 1/d_in) (activations stay O(1)); biases and LayerNorm
    shifts ~ N(0, 0.2²), LayerNorm gains 1 + N(0, 0.2²): none is 0 or 1, so a weight that is
    not loaded, or loaded into the wrong place, changes the output."""
    rng = np.random.default_rng(problem_seed(case))
    d, ff = case.d_model, case.ffn_mult * case.d_model
    out = {"x": rng.standard_normal((case.batch, case.seq_len, d))}
    for p in "qkvo":
        out[f"w{p}"] = rng.standard_normal((d, d)) / math.sqrt(d)
        out[f"b{p}"] = 0.2 * rng.standard_normal(d)
    if case.level == "encoder":
        for name, shape, scale in (("ln1", d, None), ("w1", (d, ff), d), ("b1", ff, 0),
                                   ("w2", (ff, d), ff), ("b2", d, 0), ("ln2", d, None)):
            if scale is None:
                out[f"{name}_g"] = 1.0 + 0.2 * rng.standard_normal(shape)
                out[f"{name}_b"] = 0.2 * rng.standard_normal(shape)
            elif scale == 0:
                out[name] = 0.2 * rng.standard_normal(shape)
            else:
                out[name] = rng.standard_normal(shape) / math.sqrt(scale)
    return out


class _Naive:
    """The building blocks, forward and backward, computed naively in one dtype."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.work = work_dtype(np, dtype)

    def r(self, x):
        """Round to the dtype (values kept in the work dtype)."""
        if self.dtype in ("float64", "float32"):
            return np.asarray(x).astype(self.work, copy=False)
        return round_to(np.asarray(x, dtype=np.float32), self.dtype)

    # y = x @ W + b: one rounding, as a fused addmm does
    def linear(self, x, w, b):
        return self.r(x @ w + b)

    def linear_bwd(self, x, w, dy):
        dx = self.r(dy @ w.T)
        flat_x, flat_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        return dx, self.r(flat_x.T @ flat_dy), self.r(flat_dy.sum(axis=0))

    def layer_norm(self, x, g, b):
        mu = x.mean(axis=-1, keepdims=True)
        centred = x - mu
        rstd = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + self.work(LN_EPS))
        xhat = centred * rstd
        return self.r(xhat * g + b), (xhat, rstd, g)

    def layer_norm_bwd(self, saved, dy):
        xhat, rstd, g = saved
        dxhat = dy * g
        dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                     - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
        flat = (-1, dy.shape[-1])
        return (self.r(dx), self.r((dy * xhat).reshape(flat).sum(axis=0)),
                self.r(dy.reshape(flat).sum(axis=0)))

    def add(self, a, b):
        return self.r(a + b)


def _split(t, heads):  # (B, N, d) -> (B, H, N, hd)
    b, n, d = t.shape
    return t.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)


def _merge(t):  # (B, H, N, hd) -> (B, N, d)
    b, h, n, hd = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def _mha_forward(op: _Naive, case, w, x):
    valid = key_valid_lengths(case)
    q, k, v = (_split(op.linear(x, w[f"w{p}"], w[f"b{p}"]), case.heads) for p in "qkv")
    o = naive_attention(q, k, v, case.causal, op.dtype, valid)
    om = _merge(o)
    return op.linear(om, w["wo"], w["bo"]), (x, q, k, v, o, om, valid)


def _mha_backward(op: _Naive, case, w, saved, dy, grads):
    x, q, k, v, o, om, valid = saved
    dom, grads["wo"], grads["bo"] = op.linear_bwd(om, w["wo"], dy)
    dq, dk, dv = attention_backward(q, k, v, o, _split(dom, case.heads), case.causal, op.dtype,
                                    valid)
    dx = None
    for p, dh in zip("qkv", (dq, dk, dv)):
        dxp, grads[f"w{p}"], grads[f"b{p}"] = op.linear_bwd(x, w[f"w{p}"], _merge(dh))
        dx = dxp if dx is None else op.add(dx, dxp)
    return dx


def _ffn_forward(op: _Naive, w, h):
    pre = op.linear(h, w["w1"], w["b1"])
    act = np.maximum(pre, 0)
    return op.linear(act, w["w2"], w["b2"]), (h, pre, act)


def _ffn_backward(op: _Naive, w, saved, dy, grads):
    h, pre, act = saved
    dact, grads["w2"], grads["b2"] = op.linear_bwd(act, w["w2"], dy)
    dpre = op.r(dact * (pre > 0))
    dh, grads["w1"], grads["b1"] = op.linear_bwd(h, w["w1"], dpre)
    return dh


def forward_backward(case, inputs, dtype: str = "float64",
                     backward: bool = True) -> tuple[np.ndarray, dict | None]:
    """The layer's output and (with `backward`) its gradients {x, weights...} for dL/d(out) =
    inputs["dout"], computed naively in `dtype` (float64: the reference)."""
    op = _Naive(dtype)
    w = {n: op.r(inputs[n]) for n in weight_names(case.level)}
    x = op.r(inputs["x"])
    grads = {} if backward else None
    if case.level == "mha":
        y, saved = _mha_forward(op, case, w, x)
        if backward:
            grads["x"] = _mha_backward(op, case, w, saved, op.r(inputs["dout"]), grads)
        return y, grads
    if case.level != "encoder":
        raise ValueError(f"not a layer level: {case.level!r}")
    if case.norm == "post":
        a, s_attn = _mha_forward(op, case, w, x)
        h, s_ln1 = op.layer_norm(op.add(x, a), w["ln1_g"], w["ln1_b"])
        f, s_ffn = _ffn_forward(op, w, h)
        y, s_ln2 = op.layer_norm(op.add(h, f), w["ln2_g"], w["ln2_b"])
        if backward:
            dr2, grads["ln2_g"], grads["ln2_b"] = op.layer_norm_bwd(s_ln2, op.r(inputs["dout"]))
            dh = op.add(dr2, _ffn_backward(op, w, s_ffn, dr2, grads))
            dr1, grads["ln1_g"], grads["ln1_b"] = op.layer_norm_bwd(s_ln1, dh)
            grads["x"] = op.add(dr1, _mha_backward(op, case, w, s_attn, dr1, grads))
        return y, grads
    n1, s_ln1 = op.layer_norm(x, w["ln1_g"], w["ln1_b"])
    a, s_attn = _mha_forward(op, case, w, n1)
    h = op.add(x, a)
    n2, s_ln2 = op.layer_norm(h, w["ln2_g"], w["ln2_b"])
    f, s_ffn = _ffn_forward(op, w, n2)
    y = op.add(h, f)
    if backward:
        dy = op.r(inputs["dout"])
        dn2 = _ffn_backward(op, w, s_ffn, dy, grads)
        dln2, grads["ln2_g"], grads["ln2_b"] = op.layer_norm_bwd(s_ln2, dn2)
        dh = op.add(dy, dln2)
        dn1 = _mha_backward(op, case, w, s_attn, dh, grads)
        dln1, grads["ln1_g"], grads["ln1_b"] = op.layer_norm_bwd(s_ln1, dn1)
        grads["x"] = op.add(dh, dln1)
    return y, grads


def forward(case, inputs, dtype: str = "float64") -> np.ndarray:
    return forward_backward(case, inputs, dtype, backward=False)[0]

"""The model-shaped suites measure the attention of the model they name: every case's heads,
K/V heads, head size, sliding window and soft cap are the published configuration's (each
model's config.json, as the suite's comment quotes it), so a typo in a suite is a failure here,
not a benchmark of some other model."""
import pytest

from harness import registry
from harness.spec import load_suite

# (num_attention_heads, num_key_value_heads, head_dim, sliding windows, attn_logit_softcapping)
# from each model's published config.json; head_dim is hidden_size / num_attention_heads where
# the config gives no head_dim. Llama-3-70B is sharded 8 ways: 64 / 8 query heads and 8 / 8
# K/V heads per GPU.
LLAMA3_8B = (32, 8, 128, {0}, 0.0)  # hidden_size 4096
LLAMA3_70B_TP8 = (64 // 8, 8 // 8, 128, {0}, 0.0)  # hidden_size 8192
QWEN25_7B = (28, 4, 128, {0}, 0.0)  # hidden_size 3584
MISTRAL_7B = (32, 8, 128, {4096}, 0.0)  # v0.1: hidden_size 4096, sliding_window 4096
# head_dim 256, sliding_window 4096 on alternate (local) layers, none on the global ones
GEMMA2_9B = (16, 8, 256, {0, 4096}, 50.0)

MODEL_SUITES = {
    "llama3-8b-prefill": LLAMA3_8B, "llama3-8b-decode": LLAMA3_8B,
    "llama3-70b-tp8-prefill": LLAMA3_70B_TP8, "llama3-70b-tp8-decode": LLAMA3_70B_TP8,
    "qwen2.5-7b-prefill": QWEN25_7B, "qwen2.5-7b-decode": QWEN25_7B,
    "mistral-7b": MISTRAL_7B, "gpu-mistral-7b": MISTRAL_7B,
    "gemma-2-9b": GEMMA2_9B, "gpu-gemma-2-9b": GEMMA2_9B,
}


@pytest.mark.parametrize("name", sorted(MODEL_SUITES))
def test_every_case_has_the_published_attention_shape(name):
    heads, kv_heads, head_dim, windows, softcap = MODEL_SUITES[name]
    cases = load_suite(name, registry.adapters()).cases()
    assert cases
    assert {(c.heads, c.kv_heads, c.head_dim, c.softcap) for c in cases} == \
        {(heads, kv_heads, head_dim, softcap)}
    assert {c.window for c in cases} == windows  # every layer kind the model has, no other


@pytest.mark.parametrize("cpu, gpu", [("mistral-7b", "gpu-mistral-7b"),
                                      ("gemma-2-9b", "gpu-gemma-2-9b"),
                                      ("varlen-decode", "gpu-varlen-decode")])
def test_a_gpu_twin_runs_on_cuda_in_half_precision_the_cpu_suite_in_float32(cpu, gpu):
    known = registry.adapters()
    cpu_cases, gpu_cases = load_suite(cpu, known).cases(), load_suite(gpu, known).cases()
    assert {c.device for c in cpu_cases} == {"cpu"} and {c.dtype for c in cpu_cases} == {"float32"}
    assert {c.device for c in gpu_cases} == {"cuda"}
    assert {c.dtype for c in gpu_cases} == {"float16", "bfloat16"}
    for field in ("causal", "window", "softcap", "lengths", "layout"):  # the same problems
        assert {getattr(c, field) for c in cpu_cases} == {getattr(c, field) for c in gpu_cases}


def test_ragged_decode_runs_packed_and_gives_nested_tensors_cases_they_take():
    for name in ("varlen-decode", "gpu-varlen-decode"):
        suite = load_suite(name, registry.adapters())
        nested = registry.get("torch.sdpa.nested")
        taken = [c for c in suite.cases()
                 if c.impl == "torch.sdpa.nested" and not nested.static_reasons(c)]
        assert taken and {c.layout for c in taken} == {"packed"}
        assert {c.seq_len for c in suite.cases()} == {1}  # decode only

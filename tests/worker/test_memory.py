"""The pre-flight's GPU memory estimate (arkor_ops/worker/memory.py): pure, from config.json."""

from __future__ import annotations

import pytest

from arkor_ops.worker.memory import estimate, gpu_memory_gib

#: Gemma 3 270M's text config (google/gemma-3-270m, config.json), its weights in bf16.
GEMMA_270M = {
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "vocab_size": 262144,
    "torch_dtype": "bfloat16",
}
GEMMA_270M_BYTES = 536_223_056
#: Gemma 3 27B's text part, as its multimodal config.json nests it.
GEMMA_27B = {
    "text_config": {
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "num_hidden_layers": 62,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 128,
        "vocab_size": 262208,
    },
    "torch_dtype": "bfloat16",
}
GEMMA_27B_BYTES = 54_800_000_000
RUN = {"lora_rank": 16, "batch_size": 2, "max_length": 1024}


def test_gemma_270m_fits_a_t4_and_its_vocabulary_dominates_the_activations() -> None:
    need = estimate(GEMMA_270M, GEMMA_270M_BYTES, load_in_4bit=False, **RUN)
    assert need.weights == pytest.approx(0.5, abs=0.01)  # 268M parameters in bf16
    assert need.adapter < 0.1
    assert need.activations > need.weights  # 2048 tokens x 262k logits
    assert need.total < gpu_memory_gib("Tesla-T4")  # type: ignore[operator]


def test_a_27b_model_needs_4_bit_on_a_24_gb_gpu() -> None:
    a10g = gpu_memory_gib("NVIDIA-A10G")
    assert a10g is not None
    bf16 = estimate(GEMMA_27B, GEMMA_27B_BYTES, load_in_4bit=False, **RUN)
    four = estimate(GEMMA_27B, GEMMA_27B_BYTES, load_in_4bit=True, **RUN)
    assert bf16.weights > a10g > four.weights
    assert 13 < four.weights < 17  # ~27B x 0.55 bytes, the embeddings in bf16
    assert four.total > four.weights + four.activations  # the adapter and CUDA's share too


def test_longer_sequences_and_bigger_batches_need_more() -> None:
    base = estimate(GEMMA_270M, GEMMA_270M_BYTES, load_in_4bit=False, **RUN)
    longer = estimate(
        GEMMA_270M, GEMMA_270M_BYTES, load_in_4bit=False, **{**RUN, "max_length": 4096}
    )
    wider = estimate(GEMMA_270M, GEMMA_270M_BYTES, load_in_4bit=False, **{**RUN, "lora_rank": 256})
    assert longer.activations == pytest.approx(4 * base.activations, rel=0.01)
    assert wider.adapter > 10 * base.adapter
    assert longer.weights == wider.weights == base.weights


@pytest.mark.parametrize(
    ("product", "gib"),
    [
        ("NVIDIA-A100-SXM4-80GB", 74.5),
        ("NVIDIA-H100-80GB-HBM3", 74.5),
        ("Tesla-V100-SXM2-16GB", 14.9),
        ("NVIDIA-L4", 22.0),
        ("some-unknown-accelerator", None),
        (None, None),
    ],
)
def test_gpu_memory_from_the_product_label(product: str | None, gib: float | None) -> None:
    assert gpu_memory_gib(product) == gib

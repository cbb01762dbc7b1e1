"""How much GPU memory a LoRA run needs, roughly, against what its GPU type has.

The pre-flight (:mod:`.preflight`) reads the model's ``config.json`` and the size of its weight
files (listed, never downloaded) and estimates, for the run's settings:

- the weights as loaded: bf16 (2 bytes a parameter), or with ``loadIn4bit`` about 0.55 bytes a
  parameter for the quantized linear layers while the embeddings stay in bf16;
- the LoRA adapter's training state: its parameters in bf16, their gradients and AdamW's two
  fp32 moments (12 bytes a parameter), over the attention and MLP projections of every layer;
- activations with gradient checkpointing: each layer's input kept (batch × length × hidden in
  bf16), one layer's working set recomputed, and the logits (batch × length × vocab);
- 1 GiB for the CUDA context and the allocator's slack.

No library gives this for a config before the weights are loaded (accelerate's
``estimate-memory`` instantiates the model on the meta device and counts weights only), hence
this module. It is an estimate, and the pre-flight treats it as one: a run whose weights alone
do not fit its GPU fails there, since loading them would run out of memory for certain; a run
whose estimate exceeds the GPU is reported (``preflight.passed`` carries both figures, and the
log says what to lower) but not stopped.

The GPU's memory comes from ``ARKOR_GPU_MEMORY_GIB`` (the Kubernetes backend sets it from
``ARKOR_K8S_GPU_MEMORY_GIB``, or from ``ARKOR_K8S_GPU_TYPE`` through :func:`gpu_memory_gib`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GIB = 1 << 30
#: CUDA context, cuBLAS workspaces and the caching allocator's slack.
OVERHEAD_GIB = 1.0
#: Memory of the GPU products that ``nvidia.com/gpu.product`` names (GPU feature discovery).
#: Names with the size in them (``NVIDIA-A100-SXM4-80GB``) are read from the name instead.
KNOWN_GPUS_GIB = {
    "Tesla-T4": 15.0,
    "NVIDIA-A10G": 22.0,
    "NVIDIA-A10": 22.0,
    "NVIDIA-L4": 22.0,
    "NVIDIA-L40S": 44.5,
    "NVIDIA-L40": 44.5,
    "NVIDIA-GeForce-RTX-4090": 23.5,
    "NVIDIA-RTX-A6000": 47.5,
    "NVIDIA-H200": 139.8,
}
_SIZE_IN_NAME = re.compile(r"(\d+)GB", re.IGNORECASE)
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def gpu_memory_gib(product: str | None) -> float | None:
    """The memory of one GPU named ``product`` (a ``nvidia.com/gpu.product`` value), or None.

    A size in the name (``…-80GB``) is taken as GB (10^9 bytes), as NVIDIA names them.
    """
    if not product:
        return None
    if product in KNOWN_GPUS_GIB:
        return KNOWN_GPUS_GIB[product]
    match = _SIZE_IN_NAME.search(product)
    return round(int(match.group(1)) * 1e9 / GIB, 1) if match else None


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate, in GiB."""

    weights: float
    adapter: float
    activations: float
    total: float


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a (possibly multimodal) ``config.json``."""
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


def _int(config: dict[str, Any], *names: str, default: int = 0) -> int:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return default


def estimate(
    model_config: dict[str, Any],
    weight_bytes: int,
    *,
    load_in_4bit: bool,
    lora_rank: int,
    batch_size: int,
    max_length: int,
) -> MemoryEstimate:
    """Estimate a LoRA run's GPU memory (see the module docstring for what is counted).

    Args:
        model_config: the model's ``config.json``.
        weight_bytes: the size of its weight files as stored.
        load_in_4bit: the run's ``loadIn4bit``.
        lora_rank: the adapter's rank.
        batch_size: sequences per device step.
        max_length: tokens per sequence.
    """
    cfg = _text_config(model_config)
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or model_config.get("dtype") or "")
    stored = _DTYPE_BYTES.get(dtype.removeprefix("torch."), 2)
    prequantized = "quantization_config" in model_config
    params = weight_bytes / (0.55 if prequantized else stored)
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _int(cfg, "vocab_size")
    inter = _int(cfg, "intermediate_size", "ffn_dim", default=4 * hidden)
    heads = _int(cfg, "num_attention_heads", "n_head", default=1)
    kv_heads = _int(cfg, "num_key_value_heads", default=heads)
    head_dim = _int(cfg, "head_dim", default=hidden // heads if heads else 0)
    embedding = vocab * hidden
    if load_in_4bit or prequantized:
        weights = max(params - embedding, 0.0) * 0.55 + embedding * 2
    else:
        weights = params * 2
    q, kv = heads * head_dim, kv_heads * head_dim
    per_layer = (hidden + q) * 2 + (hidden + kv) * 2 + (hidden + inter) * 3  # q,o; k,v; MLP
    adapter = lora_rank * per_layer * layers * (2 + 2 + 8)
    tokens = batch_size * max_length
    kept = tokens * hidden * 2 * layers
    working = tokens * (hidden * 10 + inter * 3) * 2
    logits = tokens * vocab * 2
    activations = kept + working + logits
    total = weights + adapter + activations + OVERHEAD_GIB * GIB
    return MemoryEstimate(
        weights=round(weights / GIB, 2),
        adapter=round(adapter / GIB, 2),
        activations=round(activations / GIB, 2),
        total=round(total / GIB, 2),
    )

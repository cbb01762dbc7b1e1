"""A tiny random Gemma-3-shaped causal LM for tests and benchmarks (seconds to build and train).

Its modules carry the same names as Gemma 3 270M, so LoRA target lists, chat template and
checkpoint files behave exactly as with the real model, and it keeps Gemma 3's conventions that
other engines rely on: ``query_pre_attn_scalar`` equals ``head_dim``, as in every Gemma 3 (with
transformers' default of 256 against a head of 32, llama.cpp, which scales attention by the head
size, computed another model). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

_CORPUS = [
    "My invoice was charged twice this month, please refund the duplicate payment.",
    "I cannot log in to my account since the password reset email never arrived.",
    "The export to CSV button does nothing when I click it in Firefox.",
    "Please add dark mode to the dashboard, my eyes hurt at night.",
    "Someone changed my password without my permission, I think I was hacked.",
    '{"category": "billing", "urgency": "high", "summary": "double charge"}',
    "system user model assistant you are a helpful support triage assistant",
]


def chat_template() -> str:
    """Gemma 3's chat template, as shipped with TRL."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "gemma3.jinja").read_text()


def build_tiny_model(out: Path, *, seed: int = 0, extra_texts: list[str] | None = None) -> Path:
    """Build and save the tiny model and tokenizer to ``out``; returns ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    texts = _CORPUS + (extra_texts or [])
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(texts * 4, trainer)
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tok.chat_template = chat_template()
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=512,
        sliding_window=128,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = Gemma3ForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "arkor-tiny.json").write_text(json.dumps({"seed": seed, "vocab": len(tok)}))
    return out


#: The modules a LoRA adapter on the tiny model (or Gemma 3) targets.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_random_adapter(base: Path, out: Path, *, seed: int, r: int = 8) -> Path:
    """Save a PEFT LoRA adapter on ``base`` with random weights (not the zero start) to ``out``.

    Untrained: two seeds answer differently, which is what serving tests and benchmarks need to
    tell two versions apart without a training run.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=LORA_TARGETS, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))
    return out


def main() -> None:
    """`python -m arkor_ops.worker.tiny OUT_DIR`: build the tiny model into OUT_DIR."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(build_tiny_model(args.out))


if __name__ == "__main__":
    main()

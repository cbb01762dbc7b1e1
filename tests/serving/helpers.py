"""What the serving tests share: the ticket they ask, and the adapter's answer in transformers."""

from __future__ import annotations

from pathlib import Path

TICKET = [{"role": "user", "content": "ticket 7: the app crashes on login"}]


def greedy_transformers(base: Path, adapter: Path, max_new_tokens: int = 8) -> str:
    """The adapter's greedy answer to :data:`TICKET` in transformers + peft (float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)
    )
    ids = tok.apply_chat_template(TICKET, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

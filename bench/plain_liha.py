"""The LIHA sweep as a reader would write it with plain transformers: the baseline every speed figure is measured against.

One `model.generate` call per head (greedy, all prompts of the sweep in one left-padded batch, KV cache, stop at EOS),
with a forward pre-hook that zeroes that head's slice of the input of the attention output projection. No `multiling`
code runs in this loop; it only needs the Hugging Face model and tokenizer.
"""
from __future__ import annotations
import re
import torch

O_PROJ = re.compile(r'(?:^|\.)(?:layers|h)\.(\d+)\.(?:self_attn\.o_proj|attn\.c_proj)$')   # Llama/Qwen/Gemma, GPT-2


def output_projections(hf) -> dict[int, torch.nn.Module]:
    "{layer: the attention output projection module}, found by name."
    out = {int(m.group(1)): mod for name, mod in hf.named_modules() if (m := O_PROJ.search(name))}
    if not out: raise SystemExit('plain_liha: no attention output projection found (self_attn.o_proj or attn.c_proj)')
    return out


def head_dim(cfg) -> int:
    return getattr(cfg, 'head_dim', None) or cfg.hidden_size // cfg.num_attention_heads


def plain_sweep(hf, tok, prompts: list[str], heads: list[tuple[int, int]], max_new_tokens: int,
                batch_size: int | None = None) -> dict[tuple[int, int], list[str]]:
    """{(layer, head): continuations of `prompts`} with that head zeroed; (-1, -1) is the clean model.

    `batch_size` None: all prompts in one batch (the loop's natural form; set it where memory is short)."""
    tok.padding_side = 'left'
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    projections, hd = output_projections(hf), head_dim(hf.config)
    bs = batch_size or len(prompts)
    batches = [tok(prompts[i:i + bs], return_tensors='pt', padding=True).to(hf.device) for i in range(0, len(prompts), bs)]
    gen_kw = dict(max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None, temperature=None,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = {}
    for layer, head in heads:
        handle = None
        if layer >= 0:
            def zero_head(module, args, head=head):
                x = args[0].clone(); x[..., head * hd:(head + 1) * hd] = 0
                return (x,) + tuple(args[1:])
            handle = projections[layer].register_forward_pre_hook(zero_head)
        try:
            texts = []
            with torch.no_grad():
                for enc in batches:
                    ids = hf.generate(**enc, **gen_kw)
                    texts += tok.batch_decode(ids[:, enc['input_ids'].shape[1]:], skip_special_tokens=True)
        finally:
            if handle is not None: handle.remove()
        out[(layer, head)] = texts
    return out

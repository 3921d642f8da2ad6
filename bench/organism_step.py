"""Benchmark of one organism training step: the `small` recipe before and after the change to bf16 autocast, eager
attention and a 4,096-token vocabulary, and the steps in between, measured side by side.

    python bench/organism_step.py [--rounds 3] [--steps 6] [--threads 2]

Each configuration is timed in rounds that interleave the configurations (so that a machine whose speed drifts
affects all of them alike): a GPT-2 of the `small` shape on random token ids, the same AdamW, autocast and gradient
clipping as `multiling.organisms.train_loop`. Prints the median seconds per step of each configuration, its
ratio to the old recipe, and the text per second it buys (tokens/s x characters per token of its vocabulary, taken
from a tokenizer trained on the balanced mixture's text).
"""
import argparse, os, statistics, time
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import torch
from transformers import GPT2Config, GPT2LMHeadModel

CONFIGS = {  # name: (vocab_size, precision, attention)
    'old: fp32, sdpa, V8192': (8192, 'fp32', 'sdpa'),
    'bf16, sdpa, V8192': (8192, 'bf16', 'sdpa'),
    'bf16, eager, V8192': (8192, 'bf16', 'eager'),
    'new: bf16, eager, V4096': (4096, 'bf16', 'eager'),
}

def make(vocab, attention):
    from multiling.organisms import SIZES, optimizer
    s = SIZES['small']
    cfg = GPT2Config(vocab_size=vocab, n_positions=s['n_positions'], n_embd=s['n_embd'], n_layer=s['n_layer'], n_head=s['n_head'],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    m = GPT2LMHeadModel(cfg); m.config._attn_implementation = attention; m.train()
    opt = optimizer(m, 1e-3)   # the training loop's own
    x = torch.randint(0, vocab, (s['batch_size'], s['n_positions']))
    return m, opt, x

def time_steps(m, opt, x, precision, steps):
    ts = []
    for _ in range(steps + 1):   # the first step warms up
        t = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16'):
            loss = m(input_ids=x, labels=x).loss
        loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); opt.zero_grad(set_to_none=True)
        ts.append(time.perf_counter() - t)
    return ts[1:]

def chars_per_token(vocabs):
    "Characters per token of a tokenizer of each vocabulary size, trained and measured as the organisms' is."
    from multiling.organisms import mixture_text, train_tokenizer, language_documents, MIXTURE_LANGUAGES
    text = mixture_text('balanced', 6_000_000, 0)
    valid = [' '.join(language_documents(l, 'valid', 50_000)) for l in MIXTURE_LANGUAGES]
    res = {}
    for v in vocabs:
        tok = train_tokenizer((d for docs in text.values() for d in docs), v)
        res[v] = sum(map(len, valid)) / sum(len(tok(s, add_special_tokens=False).input_ids) for s in valid)
    return res

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=3); p.add_argument('--steps', type=int, default=6)
    p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    times = {k: [] for k in CONFIGS}
    for r in range(a.rounds):
        for name, (vocab, precision, attention) in CONFIGS.items():
            m, opt, x = make(vocab, attention)
            times[name] += time_steps(m, opt, x, precision, a.steps)
    cpt = chars_per_token(sorted({v for v, _, _ in CONFIGS.values()}))
    from multiling.organisms import SIZES
    tokens = SIZES['small']['batch_size'] * SIZES['small']['n_positions']
    base = statistics.median(times[next(iter(CONFIGS))])
    print(f"torch {torch.__version__}, {a.threads} threads, {a.rounds} rounds x {a.steps} steps, {tokens} tokens per step")
    print('| configuration | s/step (median) | speed-up | chars/token | text per second vs old |')
    print('|---|---|---|---|---|')
    old_text = tokens / base * cpt[CONFIGS[next(iter(CONFIGS))][0]]
    for name, (vocab, _, _) in CONFIGS.items():
        s = statistics.median(times[name])
        print(f"| {name} | {s:.3f} | {base / s:.2f}x | {cpt[vocab]:.2f} | {tokens / s * cpt[vocab] / old_text:.2f}x |")

if __name__ == '__main__':
    main()

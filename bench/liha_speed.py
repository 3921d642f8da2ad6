"""Benchmark of the LIHA sweep: naive (one head per generate call), fast (many heads per batch, early stop) and
shortcut (fast + the exact teacher-forced shortcut).

    python bench/liha_speed.py [--model organism-balanced-small] [--n-prompts 8] [--languages en,fr,de,es,it,pt,ru]
                               [--max-new-tokens 16] [--device cpu] [--methods naive,fast,shortcut]

Checks that all methods give identical generations and switch rates, prints the wall time of each, the speed-up
over naive, the share of pairs the shortcut settles without generating, and the share of the machine's measured
fp32 matmul throughput each reaches (FLOPs estimated as tokens processed x 2 x params, tokens counted by a hook on
the first block; the fast method's teacher-forced passes count too).
"""
import argparse, time, os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch, pandas as pd
from multiling.models import load_model
from multiling.data import load_prompts
from multiling import liha
from multiling.liha import liha_generations, switch_rates

def matmul_flops(device, n=1024, reps=20):
    "Measured fp32 matmul throughput (FLOP/s) of this device."
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3): a @ b
    if device != 'cpu': torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps): a @ b
    if device != 'cpu': torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t)

def count_settled(counter):
    "Wrap `liha.first_divergence` so that the pairs it settles (no divergence) are counted."
    inner = liha.first_divergence
    def wrapped(*args, **kw):
        out = inner(*args, **kw)
        counter['pairs'] += len(out); counter['settled'] += sum(d is None for d in out)
        return out
    return inner, wrapped

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--model', default='organism-balanced-small'); p.add_argument('--languages', default='en,fr,de,es,it,pt,ru')
    p.add_argument('--n-prompts', type=int, default=8); p.add_argument('--max-new-tokens', type=int, default=16)
    p.add_argument('--batch-size', type=int, default=64); p.add_argument('--device', default='cpu')
    p.add_argument('--methods', default='naive,fast,shortcut')
    a = p.parse_args()
    methods = a.methods.split(',')
    if 'naive' not in methods: raise SystemExit("liha_speed: error: --methods must include naive (the reference)")
    torch.set_grad_enabled(False)
    m = load_model(a.model, device=a.device)
    prompts = load_prompts(languages=a.languages, n=a.n_prompts)
    n_params = sum(x.numel() for x in m.hf.parameters())
    tokens = [0]
    block = m.adapter.block(m.hf, 0)
    def count(mod, args, kwargs):
        h = args[0] if args else kwargs.get('hidden_states')
        tokens[0] += h.shape[0] * h.shape[1]
    hook = block.register_forward_pre_hook(count, with_kwargs=True)
    peak = matmul_flops(a.device)
    settled = dict(pairs=0, settled=0)
    inner, wrapped = count_settled(settled)
    liha.first_divergence = wrapped
    res = {}
    try:
        for method in methods:
            tokens[0] = 0; t = time.perf_counter()
            gens = liha_generations(m, prompts, a.languages, method=method, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
            wall = time.perf_counter() - t
            res[method] = dict(wall=wall, tokens=tokens[0], gens=gens, share=tokens[0] * 2 * n_params / wall / peak)
    finally:
        liha.first_divergence = inner; hook.remove()
    cols = ['layer', 'head', 'language', 'n', 'switches', 'switch_rate']
    sr = {k: switch_rates(r['gens'])[cols] for k, r in res.items()}
    heads = m.adapter.n_layers * m.adapter.n_heads
    print(f"model {m.name} ({n_params/1e6:.1f}M params, {heads} heads), {len(prompts)} prompts x {len(a.languages.split(','))} languages, "
          f"max_new_tokens {a.max_new_tokens}, device {a.device}, torch threads {torch.get_num_threads()}")
    print(f"measured fp32 matmul throughput: {peak/1e9:.1f} GFLOP/s")
    ok = True
    for k, r in res.items():
        same_gens, same_sr = r['gens'].equals(res['naive']['gens']), sr[k].equals(sr['naive'])
        ok &= same_sr
        print(f"{k:8s}: {r['wall']:8.1f} s  tokens {r['tokens']:>9,d}  est. {r['tokens']*2*n_params/r['wall']/1e9:6.2f} GFLOP/s "
              f"= {100*r['share']:.1f}% of matmul peak  speed-up vs naive {res['naive']['wall']/r['wall']:.1f}x  "
              f"identical generations: {same_gens}; identical switch rates: {same_sr}")
    if settled['pairs']:
        print(f"shortcut: {settled['settled']:,d} of {settled['pairs']:,d} (head, prompt) pairs "
              f"({100*settled['settled']/settled['pairs']:.1f}%) settled without generating")
    s = sr['naive']; print(f"max SR: {s[s.language=='all'].switch_rate.max():.3f}")
    if not ok: raise SystemExit(1)

if __name__ == '__main__':
    main()

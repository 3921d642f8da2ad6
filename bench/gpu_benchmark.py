"""GPU benchmark of the LIHA head-ablation sweep (issue 9).

On a GPU: runs the sweep of the offline pretrained default (gemma-3-270m) and of the largest organism built, with the
naive and the fast engine, in bf16, and records wall time, tokens per second, the share of the GPU's measured bf16
matmul throughput that the sweep reaches (model FLOPs / time / measured matmul FLOP/s), and peak GPU memory, in
bench/results/gpu_<device-name>.json.

    .venv/bin/python bench/gpu_benchmark.py                        # on a GPU machine
    .venv/bin/python bench/gpu_benchmark.py --device cpu --quick   # smoke test anywhere (tests/test_shard.py runs it)
"""
from __future__ import annotations
import argparse, json, platform, re, sys, time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
ORGANISM_SIZES = ('base', 'small', 'tiny')   # largest first


def matmul_throughput(device: str, dtype: torch.dtype, n: int, repeats: int) -> float:
    "Measured FLOP/s of an n x n @ n x n matmul (the practical peak the sweep is compared with)."
    a = torch.randn(n, n, device=device, dtype=dtype); b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3): a @ b                       # warm-up (kernel selection, clocks)
    sync(device); t0 = time.perf_counter()
    for _ in range(repeats): a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def sync(device: str):
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def device_name(device: str) -> str:
    if str(device).startswith('cuda'): return torch.cuda.get_device_name(torch.device(device))
    return f'cpu-{platform.machine()}'


def slug(name: str) -> str: return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


def largest_organism(models_dir: Path) -> str | None:
    for size in ORGANISM_SIZES:
        for mix in ('balanced', 'en70', 'noen'):
            if (models_dir / f'organism-{mix}-{size}' / 'config.json').exists(): return f'organism-{mix}-{size}'
    return None


def run_sweep(model, heads, prompts, method: str, max_new_tokens: int) -> list[str]:
    """The LIHA sweep (every head in `heads` x every prompt), greedy; returns the continuations.

    Uses the LIHA engine's `multiling.liha.run_sweep(model, heads, prompts, method=, max_new_tokens=)` when it exists;
    otherwise the two engines built on `interventions.generate`:
    naive: one batch per prompt (its rows = the heads); fast: all (head, prompt) pairs in large batches sorted by length.
    """
    try: from multiling import liha
    except ImportError: liha = None
    if liha is not None and hasattr(liha, 'run_sweep'):
        return liha.run_sweep(model, heads, prompts, method=method, max_new_tokens=max_new_tokens)
    from multiling.interventions import Intervention, ablate_heads, generate
    ivs = [Intervention() if tuple(h) == (-1, -1) else ablate_heads(tuple(h)) for h in heads]
    if method == 'naive':
        out = []
        for p in prompts: out += generate(model, [p] * len(heads), ivs, max_new_tokens=max_new_tokens, batch_size=len(heads))
        return out
    if method == 'fast':
        pairs = [(iv, p) for iv in ivs for p in prompts]
        return generate(model, [p for _, p in pairs], [iv for iv, _ in pairs], max_new_tokens=max_new_tokens,
                        batch_size=256 if str(model.device).startswith('cuda') else 64)
    raise SystemExit(f"gpu_benchmark: error: unknown method {method!r}; use naive or fast")


def bench_model(spec: str, device: str, dtype: str, n_prompts: int, languages: str, max_new_tokens: int,
                methods: list[str], peak_flops: float) -> list[dict]:
    "Time the sweep of one model with each engine; one record per engine."
    from multiling.models import load_model
    from multiling.data import load_prompts, prompts_long
    model = load_model(spec, device=device, dtype=dtype)
    n_params = sum(p.numel() for p in model.hf.parameters())
    prompts = prompts_long(load_prompts(languages=languages, n=n_prompts))['prompt'].tolist()
    heads = [(-1, -1)] + list(model.adapter.heads)
    tok = model.tokenizer
    prompt_tokens = sum(len(tok(p).input_ids) for p in prompts) * len(heads)
    records = []
    for method in methods:
        if str(device).startswith('cuda'): torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        run_sweep(model, heads[:2], prompts[:2], method, 2)                   # warm-up
        sync(device); t0 = time.perf_counter()
        texts = run_sweep(model, heads, prompts, method, max_new_tokens)
        sync(device); seconds = time.perf_counter() - t0
        generated = sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
        tokens = prompt_tokens + generated           # tokens through the model (the KV cache means each once)
        flops = 2 * n_params * tokens                # forward pass: ~2 FLOPs per parameter per token
        records.append(dict(
            model=spec if not Path(spec).exists() else Path(spec).name, method=method,
            dtype=str(model.dtype).replace('torch.', ''), n_params=n_params,
            n_heads_swept=len(heads) - 1, n_prompts=len(prompts), max_new_tokens=max_new_tokens,
            seconds=round(seconds, 3), tokens=tokens, tokens_per_s=round(tokens / seconds, 1),
            model_tflops_per_s=round(flops / seconds / 1e12, 6),
            share_of_matmul_peak=round(flops / seconds / peak_flops, 6),
            peak_memory_bytes=int(torch.cuda.max_memory_allocated()) if str(device).startswith('cuda') else None,
            weights_hash=model.weights_hash))
        print(json.dumps(records[-1]), flush=True)
    del model
    if str(device).startswith('cuda'): torch.cuda.empty_cache()
    return records


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cuda', help="'cuda' (default), 'cuda:N' or 'cpu'")
    ap.add_argument('--dtype', default=None, help="default: bfloat16 on a GPU, float32 on CPU")
    ap.add_argument('--models', default=None, help="comma-separated specs; default: gemma-3-270m and the largest organism built")
    ap.add_argument('--languages', default=None, help='default en,fr,de,es,ru,zh,ja; en,fr with --quick')
    ap.add_argument('--n-prompts', type=int, default=None, help='prompts per language (default 20; 1 with --quick)')
    ap.add_argument('--max-new-tokens', type=int, default=None, help='default 12; 3 with --quick')
    ap.add_argument('--methods', default='naive,fast')
    ap.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test of this script (CPU is fine)')
    ap.add_argument('--out', default=None, help='output JSON (default bench/results/gpu_<device-name>.json)')
    args = ap.parse_args(argv)

    from multiling.core import MultilingError, git_commit, write_json, MODELS_DIR
    from multiling.models import resolve_device, resolve_dtype
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype or 'auto', device)
    except MultilingError as e:
        sys.exit(f'gpu_benchmark: error: {e}')
    quick = args.quick
    languages = args.languages or ('en,fr' if quick else 'en,fr,de,es,ru,zh,ja')
    n_prompts = args.n_prompts or (1 if quick else 20)
    max_new_tokens = args.max_new_tokens or (3 if quick else 12)
    if args.models: models = [m.strip() for m in args.models.split(',') if m.strip()]
    elif quick: models = ['tiny-gpt2']
    else: models = ['gemma-3-270m'] + ([o] if (o := largest_organism(MODELS_DIR)) else [])

    n, repeats = (256, 5) if quick else ((8192, 20) if device.startswith('cuda') else (2048, 5))
    peak = matmul_throughput(device, dtype, n, repeats)
    print(f'measured {str(dtype)} matmul throughput on {device_name(device)}: {peak / 1e12:.3f} TFLOP/s', flush=True)

    records = []
    for spec in models:
        if spec == 'tiny-gpt2':   # quick mode: a tiny random GPT-2 saved to a scratch folder
            import tempfile
            from multiling.models import tiny_hf_model
            d = Path(tempfile.mkdtemp(prefix='bench-')) / 'tiny-gpt2'
            hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(d); tok.save_pretrained(d)
            spec = str(d)
        records += bench_model(spec, device, str(dtype).replace('torch.', ''), n_prompts, languages, max_new_tokens,
                               args.methods.split(','), peak)

    name = device_name(device)
    out = Path(args.out) if args.out else BENCH_DIR / 'results' / f'gpu_{slug(name)}.json'
    result = dict(device=name, device_arg=device, dtype=str(dtype).replace('torch.', ''), quick=quick,
                  matmul=dict(n=n, repeats=repeats, tflops_per_s=round(peak / 1e12, 4)),
                  torch=torch.__version__, cuda=torch.version.cuda, commit=git_commit(),
                  created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), runs=records)
    write_json(result, out)
    print(f'wrote {out}')
    return out


if __name__ == '__main__':
    main()

"""GPU benchmark of the LIHA sweep: the engine against the loop a reader would write with plain transformers.

On a GPU: the full sweep (all heads, 125 prompts x 7 languages, 24 new tokens) of the offline pretrained default
(gemma-3-270m) and of the largest organism built, in bf16, with `plain` (bench/plain_liha.py: `generate` + a pre-hook,
one head per call, all prompts in one batch) and the engine's `fast` method; per method the wall time, tokens per
second, the share of the GPU's measured bf16 matmul throughput, peak GPU memory, the speed-up over `plain` and
whether the generations tables agree (`bench/liha_speed.py` does the measuring). Writes
bench/results/gpu_<device-name>.json.

    .venv/bin/python bench/gpu_benchmark.py                        # on a GPU machine
    .venv/bin/python bench/gpu_benchmark.py --device cpu --quick   # smoke test anywhere (tests/test_shard.py runs it)
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from liha_speed import measure, slug   # noqa: E402

ORGANISM_SIZES = ('base', 'small', 'tiny')   # largest first


def largest_organism(models_dir: Path) -> str | None:
    for size in ORGANISM_SIZES:
        for mix in ('balanced', 'en70', 'noen'):
            if (models_dir / f'organism-{mix}-{size}' / 'config.json').exists(): return f'organism-{mix}-{size}'
    return None


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cuda', help="'cuda' (default), 'cuda:N' or 'cpu'")
    ap.add_argument('--dtype', default=None, help="default: bfloat16 on a GPU, float32 on CPU")
    ap.add_argument('--models', default=None, help="comma-separated specs; default: gemma-3-270m and the largest organism built")
    ap.add_argument('--languages', default=None, help='default en,fr,de,es,it,pt,ru; en,fr with --quick')
    ap.add_argument('--n-prompts', type=int, default=None, help='prompts per language (default 125; 1 with --quick)')
    ap.add_argument('--max-new-tokens', type=int, default=None, help='default 24; 3 with --quick')
    ap.add_argument('--batch-size', type=int, default=None, help="the engine's rows per forward pass (default 2048 on a GPU)")
    ap.add_argument('--methods', default='plain,fast')
    ap.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test of this script (CPU is fine)')
    ap.add_argument('--out', default=None, help='output JSON (default bench/results/gpu_<device-name>.json)')
    ap.add_argument('--save-tables', default=None, help="folder for each method's generations table (parquet)")
    args = ap.parse_args(argv)

    from multiling.core import MultilingError, write_json, MODELS_DIR
    from multiling.models import resolve_device, resolve_dtype, tiny_hf_model
    try:
        device = resolve_device(args.device)
        dtype = str(resolve_dtype(args.dtype or 'auto', device)).replace('torch.', '')
    except MultilingError as e:
        sys.exit(f'gpu_benchmark: error: {e}')
    quick, gpu = args.quick, device.startswith('cuda')
    languages = args.languages or ('en,fr' if quick else 'en,fr,de,es,it,pt,ru')
    n_prompts = args.n_prompts or (1 if quick else 125)
    max_new_tokens = args.max_new_tokens or (3 if quick else 24)
    batch_size = args.batch_size or (2048 if gpu and not quick else 64)
    methods = args.methods.split(',')
    if methods[0] != 'plain': sys.exit("gpu_benchmark: error: --methods must start with plain (the baseline)")
    if args.models: models = [m.strip() for m in args.models.split(',') if m.strip()]
    elif quick: models = ['tiny-gpt2']
    else: models = ['gemma-3-270m'] + ([o] if (o := largest_organism(MODELS_DIR)) else [])

    runs = []
    for spec in models:
        if spec == 'tiny-gpt2':   # quick mode: a tiny random GPT-2 saved to a scratch folder
            d = Path(tempfile.mkdtemp(prefix='bench-')) / 'tiny-gpt2'
            hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(d); tok.save_pretrained(d)
            spec = str(d)
        res, tables = measure(spec, device, dtype, languages, n_prompts, None, max_new_tokens, 48, batch_size, methods)
        res['model'] = Path(spec).name if Path(spec).exists() else spec
        if args.save_tables:
            Path(args.save_tables).mkdir(parents=True, exist_ok=True)
            for method, t in tables.items(): t.to_parquet(Path(args.save_tables) / f"liha_gens_{slug(res['model'])}_{dtype}_{method}.parquet")
        runs.append(res)
        if gpu: torch.cuda.empty_cache()

    name = runs[0]['device'] if runs else device
    out = Path(args.out) if args.out else BENCH_DIR / 'results' / f'gpu_{slug(name)}.json'
    result = dict(device=name, device_arg=device, dtype=dtype, quick=quick, torch=torch.__version__, cuda=torch.version.cuda,
                  created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), runs=runs)
    write_json(result, out)
    print(f'wrote {out}')
    return out


if __name__ == '__main__':
    main()

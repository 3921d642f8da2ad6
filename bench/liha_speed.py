"""Speed of the LIHA sweep against the loop a reader would write (`bench/plain_liha.py`), on one model and device.

    python bench/liha_speed.py --model gemma-3-270m --n-prompts 40 --layers 0,8,17       # CPU, a few whole layers
    python bench/liha_speed.py --model organism-balanced-small --n-prompts 40            # all heads

Methods: `plain` (transformers `generate` + a pre-hook, one head per call, all prompts in one batch: the baseline),
and the engine's methods (`multiling.liha.METHODS`: fast, shortcut, naive). Every method sweeps the same heads over
the same prompts with the same greedy decoding and language decision; the script checks that each engine method's
generations table (decision text and detected language of every clean and ablated continuation) equals the plain
loop's, and counts the rows that differ.

Writes `bench/results/liha_speed_<model>_<device>.json`: per method the wall seconds, tokens through the model,
positions unembedded, estimated FLOPs (2 x block parameters per token + 2 x vocabulary x d_model per unembedded
position), the share of the machine's measured matmul throughput (fp32 on CPU, the run's dtype on a GPU), the
speed-up over `plain`, and the comparison with `plain`'s table.
"""
from __future__ import annotations
import argparse, json, os, platform, re, sys, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch, pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from plain_liha import plain_sweep   # noqa: E402

KEYS = ['layer', 'head', 'lang', 'prompt_id']
COMPARED = ['clean_text', 'ablated_text', 'clean_lang', 'ablated_lang']


def sync(device):
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def matmul_throughput(device: str, dtype: torch.dtype) -> dict:
    "Measured FLOP/s of a square matmul on `device` (the practical peak a sweep is compared with)."
    n, reps = (8192, 20) if str(device).startswith('cuda') else (1024, 20)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3): a @ b
    sync(device); t = time.perf_counter()
    for _ in range(reps): a @ b
    sync(device)
    return dict(n=n, repeats=reps, dtype=str(dtype).replace('torch.', ''), flops_per_s=2 * n ** 3 * reps / (time.perf_counter() - t))


def device_name(device: str) -> str:
    if str(device).startswith('cuda'): return torch.cuda.get_device_name(torch.device(device))
    return f'cpu-{platform.machine()}-{torch.get_num_threads()}threads'


def slug(s: str) -> str: return re.sub(r'[^a-z0-9]+', '-', s.lower()).strip('-')


class Counter:
    "Tokens through the first block and positions through the unembedding, counted by hooks outside the timed code's logic."
    def __init__(self, m):
        a = m.adapter
        self.tokens = self.unembedded = 0
        self.handles = [a.block(m.hf, 0).register_forward_pre_hook(self._block, with_kwargs=True),
                        a.get(m.hf, a.unembed).register_forward_hook(self._unembed)]
    def _block(self, mod, args, kwargs):
        h = args[0] if args else kwargs['hidden_states']; self.tokens += h.shape[0] * h.shape[1]
    def _unembed(self, mod, args, out): self.unembedded += out.numel() // out.shape[-1]
    def reset(self): self.tokens = self.unembedded = 0
    def remove(self):
        for h in self.handles: h.remove()


def plain_table(m, rows: pd.DataFrame, heads, max_new_tokens: int, decide_chars: int, detect, batch_size=None) -> pd.DataFrame:
    "The plain loop's sweep as a generations table (same columns and decision rule as `liha.liha_generations`)."
    from multiling.liha import decision_text
    out = plain_sweep(m.hf, m.tokenizer, rows['prompt'].tolist(), [(-1, -1)] + list(heads), max_new_tokens, batch_size)
    clean = [decision_text(t, decide_chars) for t in out.pop((-1, -1))]
    clean_lang = detect(clean)
    parts = []
    for (l, h), texts in out.items():
        texts = [decision_text(t, decide_chars) for t in texts]
        parts.append(rows[['prompt_id', 'lang']].assign(layer=l, head=h, clean_text=clean, ablated_text=texts,
                                                         clean_lang=clean_lang, ablated_lang=detect(texts)))
    return pd.concat(parts, ignore_index=True)


def compare(table: pd.DataFrame, ref: pd.DataFrame) -> dict:
    "Rows of `table` that differ from `ref` (the plain loop's) in text or detected language."
    a = table[KEYS + COMPARED].sort_values(KEYS).reset_index(drop=True)
    b = ref[KEYS + COMPARED].sort_values(KEYS).reset_index(drop=True)
    if len(a) != len(b) or not a[KEYS].equals(b[KEYS]): return dict(identical=False, rows=len(a), note='different rows')
    text = (a['clean_text'] != b['clean_text']) | (a['ablated_text'] != b['ablated_text'])
    lang = (a['clean_lang'] != b['clean_lang']) | (a['ablated_lang'] != b['ablated_lang'])
    return dict(identical=not bool(text.any()), rows=len(a), rows_text_differs=int(text.sum()), rows_language_differs=int(lang.sum()),
                examples=[dict(zip(KEYS, map(str, a.loc[i, KEYS])), engine=a.loc[i, 'ablated_text'], plain=b.loc[i, 'ablated_text'])
                          for i in a.index[text][:5]])


def measure(model: str, device: str = 'cpu', dtype: str = 'auto', languages: str = 'en,fr,de,es,it,pt,ru', n_prompts: int = 40,
            layers: str | None = None, max_new_tokens: int = 24, decide_chars: int = 48, batch_size: int = 64,
            methods=('plain', 'fast'), plain_batch_size: int | None = None, repeats: int = 1, log=print) -> dict:
    "Run each method on the same sweep; the result record (see the module docstring)."
    from multiling.models import load_model
    from multiling.data import load_prompts, prompts_long
    from multiling.liha import liha_generations, parse_heads, _detector
    from multiling.core import parse_languages, git_commit
    torch.set_grad_enabled(False)
    langs = parse_languages(languages)
    m = load_model(model, device=device, dtype=dtype)
    a = m.adapter
    heads = parse_heads(None, a.n_layers, a.n_heads)
    if layers: heads = [h for h in heads if h[0] in {int(x) for x in str(layers).split(',')}]
    prompts = load_prompts(languages=langs, n=n_prompts)
    rows = prompts_long(prompts).rename(columns={'id': 'prompt_id'})[['prompt_id', 'lang', 'prompt']]
    detect = _detector(langs)
    block_params = sum(p.numel() for p in a.get(m.hf, a.layers).parameters())
    unembed = a.get(m.hf, a.unembed).weight
    peak = matmul_throughput(m.device.type if m.device.type == 'cpu' else str(m.device), m.dtype if m.device.type != 'cpu' else torch.float32)
    log(f"{m.name}: {len(heads)} heads x {len(rows)} prompts ({n_prompts} x {len(langs)} languages), {max_new_tokens} new tokens, "
        f"{device_name(str(m.device))}, {str(m.dtype)}; matmul {peak['flops_per_s'] / 1e9:.1f} GFLOP/s")
    counter = Counter(m)
    walls, counts, tables = {k: [] for k in methods}, {}, {}
    try:
        for rep in range(repeats):            # methods in turn, so a drifting machine affects each alike
            for method in methods:
                counter.reset()
                if str(m.device).startswith('cuda'): torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
                sync(m.device); t = time.perf_counter()
                if method == 'plain': table = plain_table(m, rows, heads, max_new_tokens, decide_chars, detect, plain_batch_size)
                else: table = liha_generations(m, prompts, langs, heads=heads, method=method, max_new_tokens=max_new_tokens,
                                               decide_chars=decide_chars, batch_size=batch_size, detect=detect)
                sync(m.device); walls[method].append(time.perf_counter() - t)
                tables[method] = table
                peak_mem = int(torch.cuda.max_memory_allocated()) if str(m.device).startswith('cuda') else None
                counts[method] = (counter.tokens, counter.unembedded, peak_mem)
                log(f"  run {rep + 1}/{repeats} {method:9s} {walls[method][-1]:8.1f} s  tokens {counter.tokens:>10,d}  "
                    f"unembedded {counter.unembedded:>9,d}")
    finally:
        counter.remove()
    records = []
    for method in methods:
        tokens, unembedded, peak_mem = counts[method]
        wall = float(np.median(walls[method]))
        flops = 2 * (tokens * block_params + unembedded * unembed.shape[0] * unembed.shape[1])
        records.append(dict(method=method, wall_s=round(wall, 3), wall_s_runs=[round(w, 3) for w in walls[method]],
                            tokens=tokens, unembedded_positions=unembedded, est_flops=flops,
                            est_gflops_per_s=round(flops / wall / 1e9, 2), share_of_matmul_peak=round(flops / wall / peak['flops_per_s'], 4),
                            peak_memory_bytes=peak_mem))
        log(f"  {method:9s} median {wall:8.1f} s  {flops / wall / 1e9:8.1f} GFLOP/s ({100 * flops / wall / peak['flops_per_s']:.1f}% of matmul)")
    if 'plain' in tables:
        for r in records:   # the median of the run-by-run ratios: each ratio compares runs made side by side
            r['speedup_vs_plain'] = round(float(np.median(np.array(walls['plain']) / np.array(walls[r['method']]))), 3)
            r['flop_ratio_vs_plain'] = round(records[0]['est_flops'] / r['est_flops'], 3)
            r['vs_plain'] = compare(tables[r['method']], tables['plain'])
            log(f"  {r['method']:9s} speed-up vs plain {r['speedup_vs_plain']:.2f}x; rows differing from plain: "
                f"{r['vs_plain'].get('rows_text_differs')} of {r['vs_plain']['rows']}")
    return dict(model=m.name, weights_hash=m.weights_hash, device=device_name(str(m.device)), dtype=str(m.dtype).replace('torch.', ''),
                torch=torch.__version__, threads=torch.get_num_threads(), languages=langs, n_prompts=n_prompts, n_rows=len(rows),
                heads=len(heads), layers=sorted({l for l, _ in heads}), max_new_tokens=max_new_tokens, decide_chars=decide_chars,
                batch_size=batch_size, plain_batch_size=plain_batch_size, repeats=repeats, matmul=peak, commit=git_commit(),
                created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), methods=records), tables


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='gemma-3-270m'); p.add_argument('--languages', default='en,fr,de,es,it,pt,ru')
    p.add_argument('--n-prompts', type=int, default=40); p.add_argument('--layers', default=None, help='e.g. 0,8,17 (default: all)')
    p.add_argument('--max-new-tokens', type=int, default=24); p.add_argument('--decide-chars', type=int, default=48)
    p.add_argument('--batch-size', type=int, default=64); p.add_argument('--plain-batch-size', type=int, default=None)
    p.add_argument('--device', default='cpu'); p.add_argument('--dtype', default='auto')
    p.add_argument('--methods', default='plain,fast'); p.add_argument('--out', default=None)
    p.add_argument('--repeats', type=int, default=1, help='runs of each method, in turn; the speed-up is the median of the ratios')
    a = p.parse_args(argv)
    methods = a.methods.split(',')
    if methods[0] != 'plain': raise SystemExit("liha_speed: error: --methods must start with plain (the baseline)")
    res, _ = measure(a.model, a.device, a.dtype, a.languages, a.n_prompts, a.layers, a.max_new_tokens, a.decide_chars,
                     a.batch_size, methods, a.plain_batch_size, a.repeats)
    out = Path(a.out) if a.out else BENCH / 'results' / f"liha_speed_{slug(Path(a.model).name)}_{'cpu' if a.device == 'cpu' else slug(res['device'])}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()

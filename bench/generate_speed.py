"""Before/after of the engine's generation for the studies that generate under an intervention other than LIHA.

`interventions.generate` used to unembed every prompt position in its first (prompt) pass; it now unembeds only the
last one, which is all greedy or sampled decoding reads (`logits_to_keep=1`). On a model with a large vocabulary
(gemma-3-270m: 262,144 tokens, 168M of its 268M parameters in the unembedding) that pass was most of the cost of
short generations. This script times the three kinds of generation the other studies run, old prompt pass
(re-created by patching the engine's trace to unembed all positions) against the new one, on the same prompts, and
checks that the continuations are identical:

- language control (`24_language_control`): clean greedy generation;
- language neurons (`25_language_neurons`): greedy generation with 1% of the MLP units of the last layers forced;
- retrieval masking (`26_retrieval_heads`): greedy generation with 4 heads masked.

    python bench/generate_speed.py --model gemma-3-270m --n-prompts 15 --max-new-tokens 16

Writes bench/results/generate_speed_<model>_<device>.json and a PNG figure beside it.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from liha_speed import device_name, slug   # noqa: E402


def cases(m):
    "The interventions of each study's generation (one for all rows)."
    from multiling.interventions import Intervention, UnitForce, ablate_heads
    a = m.adapter
    late = list(range(a.n_layers - max(1, a.n_layers // 6), a.n_layers))
    n_units = max(1, a.d_mlp // 100)   # 1% of each late layer's MLP units
    force = tuple(UnitForce(layer=l, index=list(range(n_units)), value=1.0) for l in late)
    heads = [(a.n_layers // 2, 0), (a.n_layers // 2, 1), (a.n_layers - 1, 0), (a.n_layers - 1, 1)]
    return {'language control (clean)': Intervention(), 'language neurons (1% units forced)': Intervention(units=force),
            'retrieval masking (4 heads)': ablate_heads(*heads)}


def old_prompt_pass():
    "Patch the engine's trace so that its prompt pass unembeds every position, as before; returns the undo."
    from multiling import interventions
    inner = interventions._run_trace
    def patched(model, batch, actions, past_key_values=None, **kw):
        if past_key_values is None and kw.get('use_cache'): kw['last'] = None
        return inner(model, batch, actions, past_key_values=past_key_values, **kw)
    interventions._run_trace = patched
    return lambda: setattr(interventions, '_run_trace', inner)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='gemma-3-270m'); p.add_argument('--languages', default='en,fr,de,es,it,pt,ru')
    p.add_argument('--n-prompts', type=int, default=15); p.add_argument('--max-new-tokens', type=int, default=16)
    p.add_argument('--batch-size', type=int, default=32); p.add_argument('--device', default='cpu')
    p.add_argument('--repeats', type=int, default=2, help='old/new pairs per case, interleaved')
    p.add_argument('--out', default=None)
    a = p.parse_args(argv)
    from multiling.models import load_model
    from multiling.data import load_prompts, prompts_long
    from multiling.interventions import generate
    from multiling.core import git_commit
    torch.set_grad_enabled(False)
    m = load_model(a.model, device=a.device)
    prompts = prompts_long(load_prompts(languages=a.languages, n=a.n_prompts))['prompt'].tolist()
    records = []
    for name, iv in cases(m).items():
        times, texts = {'old': [], 'new': []}, {}
        for _ in range(a.repeats):
            for which in ('old', 'new'):   # interleaved, so a drifting machine affects both alike
                undo = old_prompt_pass() if which == 'old' else (lambda: None)
                try:
                    t = time.perf_counter()
                    texts[which] = generate(m, prompts, iv, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
                    times[which].append(time.perf_counter() - t)
                finally:
                    undo()
        rec = dict(case=name, old_s=sorted(times['old']), new_s=sorted(times['new']),
                   speedup_median=round(sorted(o / n for o, n in zip(times['old'], times['new']))[len(times['old']) // 2], 3),
                   identical=texts['old'] == texts['new'],
                   rows_differing=sum(x != y for x, y in zip(texts['old'], texts['new'])))
        records.append(rec)
        print(json.dumps(rec), flush=True)
    res = dict(model=m.name, weights_hash=m.weights_hash, device=device_name(str(m.device)), torch=torch.__version__,
               n_prompts=len(prompts), max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, repeats=a.repeats,
               commit=git_commit(), created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), cases=records)
    out = Path(a.out) if a.out else BENCH / 'results' / f"generate_speed_{slug(Path(a.model).name)}_{'cpu' if a.device == 'cpu' else slug(res['device'])}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + '\n')
    figure(res, out.with_suffix('.png'))
    print(f'wrote {out}')


def figure(res: dict, path: Path):
    "Bars: median seconds of each case with the old and the new prompt pass."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 2.6))
    names = [c['case'] for c in res['cases']]
    med = lambda xs: xs[len(xs) // 2]
    for k, (which, colour) in enumerate([('old', '0.6'), ('new', 'tab:blue')]):
        vals = [med(c[f'{which}_s']) for c in res['cases']]
        ax.barh([i + 0.4 * k for i in range(len(names))], vals, height=0.4, color=colour,
                label='prompt pass unembeds every position (before)' if which == 'old' else 'last position only (now)')
    ax.set_yticks([i + 0.2 for i in range(len(names))], names)
    ax.set_xlabel('seconds (median of interleaved runs)')
    ax.set_title(f"{res['model']}: {res['n_prompts']} prompts x {res['max_new_tokens']} tokens, {res['device']}", fontsize=9)
    ax.legend(loc='lower right', fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == '__main__':
    main()

"""The LIHA sweeps of notebooks 20 (LIHA) and 22 (script study) at the paper's size, for a GPU.

Runs each notebook's sweep with that notebook's own defaults (read from its `parameters` cell) except the size
(`--n-prompts`, default 125: every prompt of the committed set) and the device, and writes it where the notebook
keeps its checkpoint shards (`<out_dir>/liha_shards_<model>`, `<out_dir>/liha_shards_script_<model>`), with a
`made_on.json` that records the machine, dtype, batch size and wall time. The notebooks, run on any machine with the
same model, size and dtype, then resume from these shards and compute the rest (broadcasters, compensation, figures):

    python bench/gpu_full_liha.py --device cuda --dtype float32            # on the GPU
    papermill nbs/20_liha.ipynb out.ipynb -p model gemma-3-270m -p n_prompts 125   # anywhere, afterwards

The shards hold greedy generations: the same on a CPU up to floating-point ties (float32 is the default here so
that a CPU re-run reproduces them; bf16 changes some continuations).
"""
from __future__ import annotations
import argparse, ast, json, platform, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {'20': ('nbs/20_liha.ipynb', 'liha_shards_{tag}'), '22': ('nbs/22_script_study.ipynb', 'liha_shards_script_{tag}')}


def notebook_defaults(path: Path) -> dict:
    "The assignments of a notebook's `parameters` cell."
    cells = json.loads(path.read_text())['cells']
    src = next(''.join(c['source']) for c in cells if 'parameters' in c.get('metadata', {}).get('tags', []))
    return {t.targets[0].id: ast.literal_eval(t.value) for t in ast.parse(src).body if isinstance(t, ast.Assign)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='gemma-3-270m'); p.add_argument('--n-prompts', type=int, default=125)
    p.add_argument('--device', default='cuda'); p.add_argument('--dtype', default='float32')
    p.add_argument('--batch-size', type=int, default=4096); p.add_argument('--notebooks', default='20,22')
    p.add_argument('--out-dir', default=None, help="default: the notebooks' out_dir (data/results)")
    p.add_argument('--commit', default=None, help='the commit the run was made from (a copy of the tree may have no .git)')
    a = p.parse_args(argv)
    from multiling.core import git_commit, write_json
    from multiling.models import load_model
    from multiling.data import load_prompts
    from multiling.liha import liha_generations
    torch.set_grad_enabled(False)
    m = load_model(a.model, device=a.device, dtype=a.dtype)
    tag = m.name.replace('/', '_')
    dev = torch.cuda.get_device_name(m.device) if m.device.type == 'cuda' else f'cpu-{platform.machine()}'
    for nb in a.notebooks.split(','):
        path, shards = NOTEBOOKS[nb]
        d = notebook_defaults(ROOT / path)
        out = Path(a.out_dir or d['out_dir']) / shards.format(tag=tag)
        prompts = load_prompts(d['prompts'], languages=d['languages'], n=a.n_prompts)
        t = time.perf_counter()
        gens = liha_generations(m, prompts, d['languages'], out, method=d['method'], max_new_tokens=d['max_new_tokens'],
                                decide_chars=d['decide_chars'], batch_size=a.batch_size, resume=True, progress=True)
        wall = time.perf_counter() - t
        made = dict(notebook=path, model=m.name, weights_hash=m.weights_hash, device=dev, dtype=str(m.dtype).replace('torch.', ''),
                    torch=torch.__version__, cuda=torch.version.cuda, batch_size=a.batch_size, n_prompts=a.n_prompts,
                    languages=d['languages'], max_new_tokens=d['max_new_tokens'], decide_chars=d['decide_chars'],
                    method=d['method'], rows=len(gens), wall_s=round(wall, 1), commit=a.commit or git_commit(),
                    command=' '.join(['python bench/gpu_full_liha.py', *sys.argv[1:]]),
                    created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        write_json(made, out / 'made_on.json')
        print(json.dumps(made), flush=True)


if __name__ == '__main__':
    main()

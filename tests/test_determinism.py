"""Determinism (issue 10): the same command with the same seed gives byte-identical tables on the same machine.

Each chapter's public entry point runs twice, each time in a fresh Python process (so that no cache, RNG state or
loaded model leaks from one run into the other), on a tiny model saved to disk; the tables written are compared byte
for byte. The `.meta.json` sidecars are compared too, without their `created` time stamp.
"""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'MPLBACKEND': 'Agg'}


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    "A tiny GPT-2 (random weights, the project's tiny tokenizer) saved as a model folder."
    from multiling.models import tiny_hf_model
    d = tmp_path_factory.mktemp('models') / 'tiny-gpt2'
    hf, tok = tiny_hf_model('gpt2', seed=0); hf.save_pretrained(d); tok.save_pretrained(d)
    return d


def run_twice(code: str, tmp_path: Path, *args) -> tuple[Path, Path]:
    "Run `code` (argv[1] = output folder, then `args`) in two fresh processes at once; return the two output folders."
    outs, procs = [tmp_path / 'run1', tmp_path / 'run2'], []
    for out in outs:
        out.mkdir()
        procs.append(subprocess.Popen([sys.executable, '-c', textwrap.dedent(code), str(out), *map(str, args)], cwd=ROOT,
                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-4000:]
    return outs[0], outs[1]


def assert_same_bytes(a: Path, b: Path, min_tables: int = 1):
    files_a = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob('*') if p.is_file())
    assert files_a == files_b
    tables = [f for f in files_a if f.suffix in ('.csv', '.parquet')]
    assert len(tables) >= min_tables, f"no table written: {files_a}"
    for f in files_a:
        if f.name.endswith('.meta.json'):
            ma, mb = (json.loads((d / f).read_text()) for d in (a, b))
            ma.pop('created', None); mb.pop('created', None)
            assert ma == mb, f
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs between two identical runs"


def test_generation_table_is_byte_identical(tiny_dir, tmp_path):
    code = """
        import sys, pandas as pd
        from multiling.core import set_seed, provenance, save_table
        from multiling.models import load_model
        from multiling.interventions import ablate_heads, forward, generate
        out, spec = sys.argv[1], sys.argv[2]
        set_seed(0)
        m = load_model(spec, device='cpu')
        prompts = ['The weather is nice today', 'Le temps est beau', 'Сегодня хорошая погода', '今天天气很好']
        rows = []
        for head in m.adapter.heads[::2]:
            texts = generate(m, prompts, ablate_heads(head), max_new_tokens=6)
            logits = forward(m, prompts, ablate_heads(head))['logits'][:, -1]
            for p, t, lg in zip(prompts, texts, logits):
                rows.append(dict(layer=head[0], head=head[1], prompt=p, continuation=t, top_logit=float(lg.max()),
                                 mean_logit=float(lg.mean())))
        prov = provenance(spec, {'seed': 0}, notebook='tests/test_determinism.py', weights_hash=m.weights_hash, seed=0)
        save_table(pd.DataFrame(rows), 'generations', out, prov)
        save_table(pd.DataFrame(rows), 'generations', out, prov, fmt='parquet')
    """
    a, b = run_twice(code, tmp_path, tiny_dir)
    assert_same_bytes(a, b, min_tables=2)


def test_liha_sweep_sharded_table_is_byte_identical(tiny_dir, tmp_path):
    # the head-ablation sweep (multiling.shard.liha_sweep: every head x prompts, continuation, detected language),
    # run as shards and merged, then saved with provenance: twice, from scratch
    code = """
        import sys
        from multiling.core import set_seed, provenance, save_table
        from multiling.shard import liha_sweep, run_shards, merge_shards
        out, spec = sys.argv[1], sys.argv[2]
        set_seed(0)
        task, heads, prompts, keys = liha_sweep(spec, languages='en,fr,ru', n_prompts=2, max_new_tokens=4)
        run_shards(task, heads, prompts, out, 'liha', heads_per_shard=5, prompts_per_shard=4)
        table = merge_shards(out, 'liha', sort_by=keys)
        save_table(table, 'liha_pairs', out, provenance(spec, {'seed': 0}, notebook='tests/test_determinism.py', seed=0))
    """
    a, b = run_twice(code, tmp_path, tiny_dir)
    assert_same_bytes(a, b, min_tables=2)


@pytest.fixture(scope='module')
def tiny_long_dir(tmp_path_factory):
    "The tiny GPT-2 with a 512-token context: the needle prompts of the project's byte-level tiny tokenizer are long."
    import torch
    from transformers import GPT2LMHeadModel
    from multiling.models import tiny_hf_model
    d = tmp_path_factory.mktemp('models') / 'tiny-gpt2-512'
    hf, tok = tiny_hf_model('gpt2', seed=0)
    cfg = hf.config; cfg.n_positions = 512
    torch.manual_seed(0); long = GPT2LMHeadModel(cfg).eval()
    long.save_pretrained(d); tok.save_pretrained(d)
    return d


def test_retrieval_tables_are_byte_identical(tiny_long_dir, tmp_path):
    code = """
        import sys
        from multiling.core import set_seed, provenance, save_table
        from multiling.models import load_model
        from multiling.data import parallel_corpus
        from multiling.retrieval import build_needle_prompts, score_heads, masking_sweep
        out, spec = sys.argv[1], sys.argv[2]
        set_seed(0)
        m = load_model(spec, device='cpu')
        corpus = parallel_corpus(['en', 'fr'], split='test').head(200)
        prompts = build_needle_prompts(m, corpus, 'en,fr', lengths=(64,), depths=(0.5,))
        prov = provenance(spec, {'seed': 0}, notebook='tests/test_determinism.py', seed=0)
        save_table(score_heads(m, prompts), 'retrieval_scores', out, prov)
        save_table(masking_sweep(m, prompts, {'none': [], 'L0H1': [(0, 1)], 'L1H2+L1H3': [(1, 2), (1, 3)]}, max_new_tokens=3),
                   'retrieval_masking', out, prov)
    """
    a, b = run_twice(code, tmp_path, tiny_long_dir)
    assert_same_bytes(a, b, min_tables=2)


def test_logit_lens_tables_are_byte_identical(tmp_path):
    # the logit-lens chapter: language token sets from the corpus, lens by layer, cross-lingual similarity; on a tiny
    # model built in each process from the same seed (its tokenizer is the project's tiny one)
    code = """
        import sys
        from multiling.core import set_seed, provenance, save_table
        from multiling.models import tiny_model
        from multiling.data import load_prompts, prompts_long
        from multiling import lens
        out = sys.argv[1]
        set_seed(0)
        m = tiny_model('gpt2', seed=0)
        langs = ['en', 'fr', 'ru']
        sets = lens.language_token_sets(m.tokenizer, langs, n_verses=300, min_count=2, max_tokens=30)
        prompts = prompts_long(load_prompts(languages=langs, n=4))
        by_layer = lens.language_probability_by_layer(m, prompts, sets)
        sim = lens.hidden_similarity_by_layer(m, load_prompts(languages=langs, n=6), langs, n_boot=200)
        prov = provenance('tiny-gpt2', {'seed': 0}, notebook='tests/test_determinism.py', weights_hash=m.weights_hash, seed=0)
        save_table(sets, 'lens_token_sets', out, prov)
        save_table(by_layer, 'lens_by_layer', out, prov)
        save_table(sim, 'lens_similarity', out, prov)
    """
    a, b = run_twice(code, tmp_path)
    assert_same_bytes(a, b, min_tables=3)


def test_neuron_selection_tables_are_byte_identical(tmp_path):
    # the neuron chapter: activations of every linear unit, AP and LAPE selections, and a seeded sampled generation
    # under forcing; on a tiny model built in each process from the same seed
    code = """
        import sys
        import pandas as pd
        from multiling.core import set_seed, provenance, save_table
        from multiling.models import tiny_model
        from multiling.data import load_prompts
        from multiling.interventions import generate
        from multiling import neurons as N
        out = sys.argv[1]
        set_seed(0)
        m = tiny_model('gpt2', seed=0)
        langs = ['en', 'fr', 'ru']
        wide = load_prompts(languages=langs, n=8)
        texts = [t for l in langs for t in wide[l]]; lang_of = [l for l in langs for _ in wide[l]]
        acts = N.collect_unit_activations(m, texts, lang_of)
        units = N.unit_table(m)
        ap, used = N.ap_scores(acts, langs, n_pos=6, n_neg=12, seed=0)
        medians = N.median_activations(acts, langs)
        sel_ap = N.select_ap(ap, langs, units, n_top=10, values=medians)
        sel_lape = N.select_lape(N.activation_probability(acts, langs), langs, units, n=10, values=medians)
        iv = N.neurons_intervention(sel_ap, 'fr')
        gens = generate(m, ['The', 'Le'], iv, max_new_tokens=5, do_sample=True, seed=[1, 2])
        prov = provenance('tiny-gpt2', {'seed': 0}, notebook='tests/test_determinism.py', weights_hash=m.weights_hash, seed=0)
        save_table(sel_ap, 'neurons_ap', out, prov)
        save_table(sel_lape, 'neurons_lape', out, prov)
        save_table(pd.DataFrame({'ap': ap.flatten().tolist()}), 'neurons_ap_scores', out, prov, fmt='parquet')
        save_table(pd.DataFrame({'text': gens}), 'neurons_forced_samples', out, prov)
    """
    a, b = run_twice(code, tmp_path)
    assert_same_bytes(a, b, min_tables=4)


def test_organism_training_is_identical_across_processes(tmp_path):
    "Training the same organism (tokenizer, data order, weights) in two fresh processes, with different string-hash seeds, gives identical files."
    code = textwrap.dedent('''
        import sys
        from multiling.organisms import train_organism
        train_organism('balanced', 'tiny', sys.argv[1], steps=6, checkpoint_every=3)
    ''')
    procs = []
    for i in (1, 2):
        env = {**ENV, 'PYTHONHASHSEED': str(i)}   # a set or dict ordered by str hash would show up here
        procs.append(subprocess.Popen([sys.executable, '-c', code, str(tmp_path / f'run{i}')], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]
    from multiling.core import tensor_hash
    from multiling.models import load_model
    a, b = (tmp_path / 'run1'), (tmp_path / 'run2')
    assert (a / 'tokenizer.json').read_bytes() == (b / 'tokenizer.json').read_bytes(), "tokenizer training differs between processes"
    ha, hb = (tensor_hash(dict(load_model(d).hf.named_parameters())) for d in (a, b))
    assert ha == hb, f"weights differ between two identical training runs: {ha} vs {hb}"

"Tests of the LIHA sweep engine: hand-made SR, resume after interruption, fast == naive, CLI errors."
import subprocess, sys
from pathlib import Path
import pandas as pd, pytest
from multiling.core import MultilingError, REPO_ROOT
from multiling.liha import liha_generations, switch_rates, liha_cli

PROMPTS = pd.DataFrame({'id': ['a', 'b', 'c'], 'en': ['the cat', 'a dog and', 'one'], 'fr': ['le chat', 'un chien et', 'une']})
STUB = lambda ts: ['en' if len(t) % 2 else 'fr' for t in ts]
ORG = REPO_ROOT / 'data/scratch/models/organism-balanced-tiny'

@pytest.fixture(scope='module')
def model():
    from multiling.models import load_model, tiny_model
    return load_model(str(ORG), device='cpu') if ORG.exists() else tiny_model('gpt2')

def test_hand_made_sr():
    g = pd.DataFrame(dict(model='m', layer=0, head=[0] * 4, lang=['en', 'en', 'fr', 'fr'], prompt_id=['a', 'b'] * 2,
                          clean_lang=['en', 'en', 'fr', 'de'], ablated_lang=['fr', 'en', 'en', 'de']))
    sr = switch_rates(g, n_boot=20).set_index('language')
    assert sr.loc['all', ['n', 'n_all', 'switches']].tolist() == [3, 4, 2]
    assert sr.loc['all', 'switch_rate'] == pytest.approx(2 / 3) and sr.loc['all', 'switch_rate_all'] == 0.5
    assert sr.loc['fr', 'n'] == 1 and sr.loc['fr', 'switch_rate'] == 1.0 and sr.loc['en', 'switch_rate'] == 0.5

def test_resume_after_interruption(model, tmp_path):
    kw = dict(languages='en,fr', heads='0:0,0:1,1:0,1:1', max_new_tokens=5, decide_chars=5, detect=STUB)
    full = liha_generations(model, PROMPTS, out_dir=tmp_path / 'a', **kw)
    seen = []
    def boom(name):
        seen.append(name)
        if len(seen) == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): liha_generations(model, PROMPTS, out_dir=tmp_path / 'b', on_shard=boom, **kw)
    assert len(list((tmp_path / 'b').glob('shard_*.parquet'))) == 2
    redone = []
    resumed = liha_generations(model, PROMPTS, out_dir=tmp_path / 'b', on_shard=redone.append, **kw)
    assert len(redone) == 1  # only the missing layer ran again
    pd.testing.assert_frame_equal(resumed, full)
    pd.testing.assert_frame_equal(switch_rates(resumed), switch_rates(full))

def test_checkpoints_of_other_weights_are_refused(tmp_path):
    # the same model name with other weights (re-trained, fine-tuned) must not resume from the old shards
    from multiling.models import tiny_model
    kw = dict(languages='en,fr', heads='0:0', max_new_tokens=3, decide_chars=3, detect=STUB, out_dir=tmp_path)
    liha_generations(tiny_model('gpt2', seed=0), PROMPTS, **kw)
    with pytest.raises(MultilingError, match='other settings'):
        liha_generations(tiny_model('gpt2', seed=1), PROMPTS, **kw)

def test_fast_equals_naive(model):
    kw = dict(languages='en,fr', heads=None, max_new_tokens=8, decide_chars=12)
    det = None if ORG.exists() else STUB
    fast = liha_generations(model, PROMPTS, method='fast', detect=det, **kw)
    naive = liha_generations(model, PROMPTS, method='naive', detect=det, **kw)
    pd.testing.assert_frame_equal(fast, naive)
    pd.testing.assert_frame_equal(switch_rates(fast), switch_rates(naive))

@pytest.mark.parametrize('kw', [dict(languages='en,xx'), dict(heads='99:0'), dict(heads='0:99'), dict(method='slow'),
                                dict(max_new_tokens='many'), dict(prompts=PROMPTS.iloc[:0]),
                                dict(prompts=PROMPTS.assign(en=['', 'x', 'y']))])
def test_bad_input(model, kw):
    args = dict(prompts=PROMPTS, languages='en,fr', detect=STUB) | kw
    with pytest.raises(MultilingError): liha_generations(model, **args)

@pytest.mark.parametrize('args', [['--languages', 'en,zz'], ['--max-new-tokens', 'abc'], ['--n-prompts', '0'],
                                  ['--prompts', '/nonexistent.csv']])
def test_cli_bad_input(tmp_path, args):
    r = subprocess.run([sys.executable, '-c', 'from multiling.liha import liha_cli; liha_cli()', '--model', 'x', '--out', str(tmp_path / 'o'), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'error' in r.stderr
    assert not (tmp_path / 'o').exists()

# --- compensation (DLA of every head, clean vs one head ablated) ---
from multiling.liha import (compensation, compensation_runs, compensation_specificity, language_directions,
                            COMPENSATION_METRICS)

COMP_COLS = ['model', 'ablated_layer', 'ablated_head', 'layer', 'head', 'relation', 'metric', 'mean_clean', 'mean_ablated',
             'delta', 'p', 'q', 'n_prompts']

@pytest.mark.parametrize('family', ['gpt2', 'llama', 'gemma'])
def test_compensation_table(family):
    from multiling.models import tiny_model
    m = tiny_model(family); a = m.adapter
    t = compensation(m, PROMPTS, 'en,fr', heads=[(0, 1), (1, 3)], batch_size=4)
    assert list(t.columns) == COMP_COLS
    assert len(t) == 2 * a.n_layers * a.n_heads * len(COMPENSATION_METRICS) and (t.n_prompts == 6).all()
    own = t[(t.relation == 'self') & (t.metric == 'dla')].set_index(['ablated_layer', 'ablated_head'])
    assert sorted(own.index) == [(0, 1), (1, 3)] and (own.mean_ablated == 0).all() and (own.mean_clean != 0).all()
    # upstream of the ablation nothing changes (Gemma's attention-output norm rescales the heads of the same layer)
    assert (t[t.relation.isin(['below'] if family == 'gemma' else ['below', 'same'])].delta == 0).all()
    assert t.p.between(0, 1).all() and t.q.between(0, 1).all()
    runs = compensation_runs(m, PROMPTS, 'en,fr', heads=[(1, 0), (1, 3)], batch_size=4)
    spec = compensation_specificity(runs, {(1, 3): [(1, 0)]}, n_boot=100)
    # nothing lies above the last layer: an ablation there leaves no other head anything to add back above it
    above = spec[spec.scope == 'heads above'].iloc[0]
    assert above.recovered_dla_top == 0 and above.recovered_dla_control == 0 and above.excess_recovered_dla == 0
    assert spec.lost_dla_top.iloc[0] == pytest.approx(runs.clean['dla'][:, 1, 3].mean())

def test_compensation_dla_by_hand():
    "The ablated run's DLA of a head above, recomputed with plain torch hooks (no nnsight) on a tiny GPT-2."
    import torch
    from multiling.models import tiny_model
    m = tiny_model('gpt2'); a, hf = m.adapter, m.hf; hd = a.head_dim
    dirs = language_directions(m, {'en': PROMPTS.en.tolist(), 'fr': PROMPTS.fr.tolist()})
    t = compensation(m, PROMPTS, 'en,fr', heads='0:2', directions=dirs)
    got = t[(t.metric == 'dla') & (t.layer == 1) & (t['head'] == 0)].iloc[0]
    def run(text, ablate):
        seen = {}
        def zero(mod, args):
            x = args[0].clone(); x[..., 2 * hd:3 * hd] = 0; return (x,)
        hooks = [hf.transformer.h[1].attn.c_proj.register_forward_pre_hook(lambda mod, args: seen.__setitem__('z', args[0])),
                 hf.transformer.ln_f.register_forward_pre_hook(lambda mod, args: seen.__setitem__('r', args[0]))]
        if ablate: hooks.append(hf.transformer.h[0].attn.c_proj.register_forward_pre_hook(zero))
        try:
            with torch.no_grad(): hf(**m.tokenizer(text, return_tensors='pt'))
        finally:
            for h in hooks: h.remove()
        return seen['z'][0, -1].double(), seen['r'][0, -1].double()
    vals = {False: [], True: []}
    for lang in ['en', 'fr']:
        for text in PROMPTS[lang]:
            _, r_clean = run(text, False)
            scale = (r_clean.var(unbiased=False) + hf.transformer.ln_f.eps).sqrt()   # frozen at the clean run
            w = hf.transformer.ln_f.weight.detach().double() * dirs[lang].double(); w = w - w.mean()
            W0 = hf.transformer.h[1].attn.c_proj.weight[:hd].detach().double()   # Conv1D: [in, out]; head 0 = first head_dim rows
            for ablate in (False, True):
                z, _ = run(text, ablate)
                vals[ablate].append(float(z[:hd] @ W0 @ w / scale))
    assert got.mean_clean == pytest.approx(sum(vals[False]) / 6, rel=1e-4, abs=1e-7)
    assert got.mean_ablated == pytest.approx(sum(vals[True]) / 6, rel=1e-4, abs=1e-7)
    assert got.mean_clean != pytest.approx(got.mean_ablated, rel=1e-6)   # head 0:2 does feed head 1:0

def _sharp_tiny_model():
    "A tiny GPT-2 whose heads matter (attention weights x5), with a tokenizer whose EOS is the token it generates most."
    import copy, torch
    from collections import Counter
    from multiling.models import tiny_model
    from multiling.interventions import generate
    m = tiny_model('gpt2')
    with torch.no_grad():
        for block in m.hf.transformer.h: block.attn.c_proj.weight.mul_(5); block.attn.c_attn.weight.mul_(5)
    texts = pd.concat([PROMPTS.en, PROMPTS.fr]).tolist()
    frequent = Counter(t for ids in generate(m, texts, max_new_tokens=8, return_ids=True).ids for t in ids).most_common(1)[0][0]
    m.tokenizer = copy.deepcopy(m.tokenizer)   # the tiny tokenizer is shared (cached): change a copy
    m.tokenizer.eos_token = m.tokenizer.convert_ids_to_tokens(frequent)
    return m

def test_teacher_forced_shortcut_equals_generation():
    "The shortcut ('shortcut') gives the same table as generating every pair ('fast') and as one head at a time ('naive')."
    from multiling.interventions import ablate_heads, Intervention
    from multiling.liha import first_divergence, _gen, _prompt_rows
    m = _sharp_tiny_model(); a = m.adapter
    kw = dict(languages='en,fr', heads=None, max_new_tokens=8, decide_chars=12, detect=STUB)
    # the case must hold both kinds of pairs: ablations that keep the clean continuation and ones that leave it,
    # some of those at EOS, and clean continuations that end at EOS
    texts = _prompt_rows(PROMPTS, ['en', 'fr'])['prompt'].tolist()
    clean = _gen(m, texts, Intervention(), 'fast', 8, 64, 12, return_ids=True)
    n = len(a.heads)
    div = first_divergence(m, texts * n, [ablate_heads(h) for h in a.heads for _ in texts], clean.ids * n, clean.eos * n)
    kept, left = sum(d is None for d in div), sum(d is not None for d in div)
    assert kept >= 5 and left >= 5, (kept, left)
    assert any(d is not None and d[1] == m.tokenizer.eos_token_id for d in div) and any(clean.eos) and not all(clean.eos)
    shortcut = liha_generations(m, PROMPTS, method='shortcut', **kw)
    fast = liha_generations(m, PROMPTS, method='fast', **kw)
    naive = liha_generations(m, PROMPTS, method='naive', **kw)
    pd.testing.assert_frame_equal(shortcut, fast)
    pd.testing.assert_frame_equal(shortcut, naive)
    assert (shortcut.ablated_text != shortcut.clean_text).sum() >= 5   # the ablations do change continuations

def test_long_prompt_table_gives_the_same_rows(model):
    from multiling.data import prompts_long
    kw = dict(languages='en,fr', heads='0:1,1:0', max_new_tokens=4, decide_chars=6, detect=STUB)
    wide = liha_generations(model, PROMPTS, **kw)
    pd.testing.assert_frame_equal(liha_generations(model, prompts_long(PROMPTS), **kw), wide)
    with pytest.raises(MultilingError, match='not among'): liha_generations(model, prompts_long(PROMPTS), **(kw | dict(languages='en')))

"""Language-specific neurons (issue 7): AP scoring and unit forcing against hand computations on tiny models, neuron
lists as files, the tampering sweep's checkpoints, and the experiment notebook's refusal of leaky splits."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from multiling.core import MultilingError
from multiling.models import tiny_model
from multiling.interventions import generate
from multiling import neurons as N

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'MPLBACKEND': 'Agg'}
SENTENCES = {'en': ['The weather is nice today.', 'We walk to the market and buy bread.', 'The children play outside.', 'It rains.'],
             'fr': ["Le temps est beau aujourd'hui.", 'Nous allons au marché.', 'Les enfants jouent dehors.', 'Il pleut.'],
             'ru': ['Сегодня хорошая погода.', 'Мы идём на рынок.', 'Дети играют на улице.', 'Идёт дождь.']}
LANGS = list(SENTENCES)


@pytest.fixture(scope='module')
def tiny():
    return tiny_model('gpt2')


@pytest.fixture(scope='module')
def acts(tiny):
    texts = [t for l in LANGS for t in SENTENCES[l]]
    return N.collect_unit_activations(tiny, texts, [l for l in LANGS for _ in SENTENCES[l]], batch_size=5)


def ap_by_definition(scores, labels):
    "Sum over distinct thresholds, from high to low, of (recall gain) x precision."
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    ap, last = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        pred = scores >= t; tp = (pred & labels).sum()
        ap += (tp / labels.sum() - last) * tp / pred.sum(); last = tp / labels.sum()
    return ap


def test_average_precision_by_hand_and_with_ties():
    # the tie at 0.8 holds one positive and one negative: precision 2/3 at the second threshold, in either stored order
    assert float(N.average_precision([0.9, 0.8, 0.8, 0.3], [1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert float(N.average_precision([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0])) == pytest.approx(5 / 6)
    assert float(N.average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])) == pytest.approx(0.833333, abs=1e-5)
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(60, 500)).astype(float)   # many ties
    labels = rng.random(60) < 0.25
    got = N.average_precision(torch.tensor(scores), labels, chunk=37).numpy()
    assert np.allclose(got, [ap_by_definition(scores[:, j], labels) for j in range(scores.shape[1])], atol=1e-6)
    with pytest.raises(MultilingError, match='positives and negatives'): N.average_precision([1.0, 2.0], [0, 0])


def test_ap_scores_find_planted_units_of_a_tiny_model(tiny, acts):
    mean = acts.mean.clone(); fr = acts.rows('fr'); last = mean.shape[1] - 1
    mean[fr, 3] = 50.0 + torch.arange(len(fr)); mean[fr, last] = -50.0 - torch.arange(len(fr))
    planted = N.UnitActivations(mean, acts.active, acts.n_tokens, acts.language, acts.units)
    ap, used = N.ap_scores(planted, LANGS, n_pos=4, n_neg=6)
    assert used.n_neg.tolist() == [6, 6, 6] and used.n_pos.tolist() == [4, 4, 4]
    i = LANGS.index('fr')
    assert float(ap[i, 3]) == 1.0 and float(ap[i, last]) == pytest.approx(ap_by_definition(mean[np.r_[fr, N.negative_sample(acts.language, 'fr', 6)], last], [1] * 4 + [0] * 6))
    sel = N.select_ap(ap, LANGS, acts.units, n_top=10)
    top, bottom = (sel[(sel.language == 'fr') & (sel.kind == k)] for k in ('top', 'bottom'))
    assert top.unit.iat[0] == 3 and bottom.unit.iat[0] == last and not set(top.unit) & set(bottom.unit)
    assert (top.layer == acts.units.layer.iloc[top.unit].to_numpy()).all()
    # for English the French plant is a negative that fires: unit 3 must not enter English's top set
    assert 3 not in set(sel[(sel.language == 'en') & (sel.kind == 'top')].unit)


def test_forcing_during_generation_equals_hooks(tiny, acts):
    "Greedy generation with forced units == HF generate with forward hooks that overwrite the same outputs (KV cache on)."
    units = acts.units
    pick = pd.concat([units[(units.layer == 0) & (units.site == 'attn.c_attn')].iloc[[2, 40, 70]],
                      units[(units.layer == 1) & (units.site == 'mlp.c_fc')].iloc[[0, 5]]])
    vals = np.array([2.0, -1.5, 0.5, 3.0, -2.0])
    iv = N.forcing_intervention(pick, vals, label='t')
    prompt = 'Le temps est beau'
    hooks = []
    for (l, s), g in pick.assign(value=vals).groupby(['layer', 'site']):
        def hook(_, __, out, idx=g['index'].tolist(), v=torch.tensor(g['value'].tolist(), dtype=torch.float32)):
            out = out.clone(); out[..., idx] = v; return out
        hooks.append(tiny.adapter.get(tiny.hf, s, l).register_forward_hook(hook))
    try:
        b = tiny.encode([prompt])
        ref = tiny.hf.generate(b.input_ids, attention_mask=b.attention_mask, max_new_tokens=10, do_sample=False,
                               pad_token_id=tiny.tokenizer.pad_token_id, eos_token_id=None)
    finally:
        for h in hooks: h.remove()
    got = generate(tiny, [prompt], iv, max_new_tokens=10, stop_at_eos=False)[0]
    assert got == tiny.tokenizer.decode(ref[0, b.input_ids.shape[1]:])
    assert got != generate(tiny, [prompt], max_new_tokens=10, stop_at_eos=False)[0]   # the forcing did something
    # sampled with a seed: the same intervention and seed give the same text, alone or in a batch of other rows
    kw = dict(max_new_tokens=8, stop_at_eos=False, do_sample=True)
    alone = generate(tiny, [N.bos_prompt(tiny)], iv, add_bos=False, seed=[11], **kw)
    batch = generate(tiny, [N.bos_prompt(tiny)] * 3, [None, iv, None], add_bos=False, seed=[3, 11, 4], **kw)
    assert alone[0] == batch[1]


def test_neuron_list_file_round_trip(tiny, acts, tmp_path):
    ap, _ = N.ap_scores(acts, LANGS)
    med = N.median_activations(acts, LANGS)
    sel = pd.concat([N.select_ap(ap, LANGS, acts.units, n_top=7, values=med),
                     N.select_lape(N.activation_probability(acts, LANGS), LANGS, acts.units, n=7, values=med)], ignore_index=True)
    path = N.save_neurons(sel, tmp_path / 'n.json', model=tiny.name, params={'n_top': 7}, weights_hash=tiny.weights_hash)
    back = N.load_neurons(path)
    pd.testing.assert_frame_equal(back[N.NEURON_COLUMNS + ['value']], sel[N.NEURON_COLUMNS + ['value']], check_dtype=False)
    assert back.attrs['meta']['weights_hash'] == tiny.weights_hash and back.attrs['meta']['params'] == {'n_top': 7}
    # the loaded list forces the same units to the same values as the selection it came from
    a, b = N.neurons_intervention(back, 'ru', method='ap'), N.neurons_intervention(sel, 'ru', method='ap')
    assert [(f.layer, f.site, f.index) for f in a.units] == [(f.layer, f.site, f.index) for f in b.units]
    assert all(np.array_equal(np.float32(fa.value), np.float32(fb.value)) for fa, fb in zip(a.units, b.units))   # float32 exact
    assert sum(len(f.index) for f in a.units) == 14
    with pytest.raises(MultilingError, match='no neuron list'): N.load_neurons(tmp_path / 'missing.json')
    (tmp_path / 'cut.json').write_text(path.read_text()[:200])
    with pytest.raises(MultilingError, match='not valid JSON'): N.load_neurons(tmp_path / 'cut.json')
    with pytest.raises(MultilingError, match='needs the columns'): N.save_neurons(sel.drop(columns='site'), tmp_path / 'x.json')


def test_tampering_sweep_resumes_from_its_checkpoints(tiny, acts, tmp_path):
    ap, _ = N.ap_scores(acts, LANGS)
    med = N.median_activations(acts, LANGS)
    runs = N.tampering_runs(LANGS, [5, 50], ap, seed=0)
    prompts = {l: N.unconditional_prompts(tiny, 2) for l in LANGS}
    kw = dict(max_new_tokens=5, out_dir=tmp_path / 'ckpt')
    first = N.run_tampering(tiny, runs, med, acts.units, LANGS, prompts, **kw)
    assert len(first) == len(runs) * 2 and set(first.condition) == {'none', 'ap', 'random'}
    # the key keeps the layout of the committed checkpoints (data/results/neurons_tampering_shards_*): they resume
    key = json.loads((tmp_path / 'ckpt' / 'sweep_key.json').read_text())
    assert set(key) == {'model', 'weights', 'runs', 'max_new_tokens', 'temperature', 'top_k', 'languages', 'values', 'prompts'}
    assert key['weights'] == tiny.weights_hash and key['max_new_tokens'] == 5
    (tmp_path / 'ckpt' / 'shard_fr.parquet').unlink()          # an interrupted sweep: one language missing
    again = N.run_tampering(tiny, runs, med, acts.units, LANGS, prompts, **kw)
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(MultilingError, match='other settings'):
        N.run_tampering(tiny, runs, med, acts.units, LANGS, prompts, max_new_tokens=6, out_dir=tmp_path / 'ckpt')


def test_tampering_summary_gives_a_zero_share_a_wilson_interval_above_zero():
    gens = pd.DataFrame(dict(prompt_type='translation', condition=['none'] * 6 + ['ap'] * 6, n_units=[0] * 6 + [10] * 6,
                             in_target=[0] * 6 + [1, 1, 1, 0, 0, 0]))
    s = N.tampering_summary(gens).set_index('condition')
    z2 = 1.959964 ** 2
    assert s.loc['none', 'share_in_target'] == 0 and s.loc['none', 'ci_low'] == 0
    assert np.isclose(s.loc['none', 'ci_high'], z2 / (6 + z2))    # 0 of 6 outputs: [0, 0.39], not [0, 0]
    half = np.sqrt(z2) / (1 + z2 / 6) * np.sqrt(0.25 / 6 + z2 / (4 * 36))   # Wilson at 3 of 6, centred on 1/2
    assert np.allclose(s.loc['ap', ['ci_low', 'ci_high']].astype(float), [0.5 - half, 0.5 + half])
    assert s.loc['ap', ['n', 'k']].tolist() == [6, 3]


def test_notebook_refuses_scoring_and_evaluating_on_one_split(tmp_path):
    out = tmp_path / 'out'
    nb = tmp_path / 'run.ipynb'
    r = subprocess.run([str(Path(sys.executable).parent / 'papermill'), '-k', 'python3', str(ROOT / 'nbs' / '25_language_neurons.ipynb'),
                        str(nb), '-p', 'model', 'tiny', '-p', 'score_split', 'test', '-p', 'eval_split', 'test',
                        '-p', 'out_dir', str(out / 'results'), '-p', 'fig_dir', str(out / 'figures')],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=180)
    assert r.returncode != 0
    assert 'must not come from the scoring sentences' in r.stdout + r.stderr
    assert not out.exists(), f"bad input wrote {list(out.rglob('*'))}"

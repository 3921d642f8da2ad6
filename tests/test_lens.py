"Logit lens, token sets and similarity: checks that need the corpus, a trained tokenizer or a tiny model."
import numpy as np
import pandas as pd
import pytest
import torch
from multiling.core import MultilingError, REPO_ROOT
from multiling.models import tiny_model, load_model
from multiling import lens
from multiling.langid import char_script

ORGANISM = REPO_ROOT / 'data' / 'scratch' / 'models' / 'organism-balanced-tiny'


@pytest.mark.skipif(not (ORGANISM / 'config.json').exists(), reason='tiny organism not built (make ci-models)')
def test_token_sets_on_the_corpus_are_disjoint_and_in_script():
    tok = load_model(str(ORGANISM), device='cpu').tokenizer
    sets = lens.language_token_sets(tok, 'en,fr,ru,zh,ja', n_verses=300, max_tokens=40)
    assert set(sets.language) == {'en', 'fr', 'ru', 'zh', 'ja'}
    assert not sets.token_id.duplicated().any()
    assert (sets['count'] >= 5 * sets['max_other']).all()
    ru = sets[sets.language == 'ru'].token.str.strip()
    assert all({char_script(c) for c in t if c.isalpha()} == {'Cyrillic'} for t in ru)
    assert sets.groupby('language').size().max() <= 40
    # the same verses, the same sets (deterministic given the seed)
    again = lens.language_token_sets(tok, 'en,fr,ru,zh,ja', n_verses=300, max_tokens=40)
    pd.testing.assert_frame_equal(sets, again)


@pytest.mark.parametrize('family', ['gpt2', 'gemma'])
def test_full_normalisation_equals_softmax_over_the_vocabulary(family):
    m = tiny_model(family)
    sets = {'x': [3, 4, 5], 'y': [10, 200]}
    got = lens.language_probability_by_layer(m, ['hello world', 'Das Wetter'], sets, normalize='full')
    r = lens.forward(m, ['hello world', 'Das Wetter'], save=['resid'])['resid'][:, :, -1]
    logits = lens.lens_logits(m, r)                       # whole vocabulary
    p = torch.softmax(logits, -1)
    for lang, ids in sets.items():
        expect = p[..., ids].sum(-1)                       # [L, b]
        g = got[got.language == lang].pivot(index='layer', columns='prompt_index', values='probability').to_numpy()
        assert np.allclose(g, expect.numpy(), atol=1e-5)
    # the chunked log-partition equals the direct one
    assert torch.allclose(lens._full_logsumexp(m, r, chunk=7), torch.logsumexp(logits, -1), atol=1e-5)


def test_bad_token_sets_are_refused():
    m = tiny_model('gpt2')
    with pytest.raises(MultilingError, match='outside'):
        lens.language_probability_by_layer(m, ['hi'], {'en': [10 ** 7]})
    with pytest.raises(MultilingError, match='disjoint'):
        lens.language_probability_by_layer(m, ['hi'], {'en': [3, 4], 'fr': [4]})
    with pytest.raises(MultilingError, match='empty'):
        lens.language_probability_by_layer(m, ['hi'], {'en': []})
    with pytest.raises(MultilingError, match='normalize'):
        lens.language_probability_by_layer(m, ['hi'], {'en': [3]}, normalize='softmax')
    with pytest.raises(MultilingError, match='ratio'):
        lens.language_token_sets(m.tokenizer, 'en,fr', ratio=1.0, corpus=pd.DataFrame({'en': ['a'], 'fr': ['b']}))


def test_lens_rows_carry_the_prompt_columns():
    m = tiny_model('llama')
    table = pd.DataFrame({'prompt': ['hello', 'Le temps'], 'kind': ['mono', 'mono'], 'target': ['en', 'fr']})
    got = lens.language_probability_by_layer(m, table, {'en': [3], 'fr': [4]})
    assert len(got) == 2 * m.adapter.n_layers * 2 and {'kind', 'target', 'layer', 'language'} <= set(got.columns)


def test_similarity_of_a_language_with_a_copy_of_itself_is_one_and_margin_is_paired_minus_unpaired():
    m = tiny_model('gpt2')
    t = pd.DataFrame({'en': ['The weather is nice', 'We walk to the market', 'Today'], 'fr': ['The weather is nice', 'We walk to the market', 'Today']})
    sim = lens.hidden_similarity_by_layer(m, t, 'en,fr', n_boot=20)
    assert np.allclose(sim.cosine, 1, atol=1e-5) and (sim.cosine_unpaired < 1).all()
    assert np.allclose(sim.margin, sim.cosine - sim.cosine_unpaired)
    with pytest.raises(MultilingError):
        lens.hidden_similarity_by_layer(m, t.head(1), 'en,fr')


def test_three_phases_rule_on_a_shifted_curve():
    layers = np.arange(20)
    sim = 1 / (1 + np.exp(-(layers - 5.5) * 2))
    for onset in (12, 15, 18):
        tgt = (layers >= onset).astype(float) * 0.7 + 0.1
        ph = lens.three_phases(sim, tgt)
        assert ph['converge'] == 7 and ph['generate'] == onset and ph['k'] == 20 - onset
        assert ph['phase'].count('task') == onset - 7   # normalised sigmoid: 0.73 at layer 6, 0.95 at 7
    with pytest.raises(MultilingError):
        lens.three_phases(sim, sim, sim_threshold=0)

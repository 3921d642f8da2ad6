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

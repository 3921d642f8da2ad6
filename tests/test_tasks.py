"Task generators, scenarios, scoring and the Hugging Face loaders (with a stand-in `datasets`)."
import os, re, subprocess, sys, types
import numpy as np
import pandas as pd
import pytest
from multiling.core import MultilingError
from multiling import tasks, finetune


def test_items_are_reproducible_and_gold_is_located_in_every_language():
    a = tasks.task_items(tasks.TASK_LANGUAGES, 12, seed=3)
    b = tasks.task_items(tasks.TASK_LANGUAGES, 12, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = tasks.task_items(tasks.TASK_LANGUAGES, 12, seed=4)
    assert not a[a.task == 'qa'].item_id.equals(c[c.task == 'qa'].item_id.reset_index(drop=True))
    for _, r in a[a.task == 'qa'].iterrows():
        assert re.search(tasks.name_pattern(r.gold, r.language), r.content)
        assert r.gold_text == tasks.NAMES[r.gold]['forms'][r.language]
    mc = a[a.task == 'mc']
    assert mc.gold.isin(list('ABCD')).all() and mc.groupby('item_id').gold.nunique().eq(1).all()
    assert mc.drop_duplicates('item_id').gold.nunique() > 1       # the gold letter is not always the same


def test_scenarios_refuse_bad_targets_and_missing_languages():
    items = tasks.task_items('en,fr', 1, tasks=('arithmetic',))
    with pytest.raises(MultilingError, match='other than English'):
        tasks.scenario_prompts(None, items, ['en'])
    with pytest.raises(MultilingError, match='no \\[.ru.\\] version'):
        tasks.scenario_prompts(None, items, ['ru'])
    with pytest.raises(MultilingError, match='no task templates'):
        tasks.task_items('en,ar', 1)


def test_instruction_set_uses_other_items_than_the_evaluation():
    ev = tasks.task_items('en,fr,ru', 10, seed=0)
    train = finetune.instruction_set('en,fr,ru', 200, seed=1)
    assert not set(train.item_id) & set(ev.item_id)
    assert not set(train.prompt) & set(tasks.scenario_prompts(None, ev, ['fr', 'ru']).prompt)
    assert set(train.scenario) == {tasks.scenario_label(i, c) for i, c in tasks.SCENARIOS}


def test_mc_scoring_with_ten_options_and_letters_in_words():
    df = pd.DataFrame(dict(task='mc', target='fr', gold=['J', 'J', 'B'], n_options=[10, 10, 4],
                           response=['La réponse est (J).', 'A', 'Bible B']))
    s = tasks.score_responses(df)
    assert s.correct.tolist() == [True, False, True]


def test_answer_patterns_are_the_same_in_every_process():
    "The alternatives of a pattern came from a set: their order followed the string hash seed of the process."
    code = "from multiling import tasks; print(tasks.any_language_pattern(['samuel', 'moses', 'david']))"
    runs = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                           env={**os.environ, 'PYTHONHASHSEED': seed}).stdout for seed in ('1', '2', '3')}
    assert len(runs) == 1 and 'Samuel' in runs.pop()


def test_failure_modes_give_a_zero_rate_a_wilson_interval_above_zero():
    # 3 answers per task; arithmetic: none right, none in the target language; qa: all right and consistent
    scored = pd.DataFrame(dict(task=['arithmetic'] * 3 + ['qa'] * 3, correct=[False] * 3 + [True] * 3,
                               consistent=[False] * 3 + [True] * 3, detected=['en'] * 3 + ['fr'] * 3,
                               outcome=['neither'] * 3 + ['both'] * 3))
    modes = tasks.failure_modes(scored, by=['task']).set_index('task')
    z2 = 1.959964 ** 2
    for name in ('accuracy', 'consistency'):
        zero, full = modes.loc['arithmetic'], modes.loc['qa']
        assert zero[name] == 0 and zero[f'{name}_low'] == 0
        assert np.isclose(zero[f'{name}_high'], z2 / (3 + z2))     # Wilson at k = 0: n / (n + z^2) below 1, not 0
        assert full[name] == 1 and full[f'{name}_high'] == 1 and np.isclose(full[f'{name}_low'], 3 / (3 + z2))


class _FakeDataset:
    def __init__(self, df): self.df = df
    def to_pandas(self): return self.df.copy()


def _fake_datasets(tables):
    mod = types.ModuleType('datasets')
    def load_dataset(name, config, split):
        if (name, config) not in tables: raise FileNotFoundError(f'{name}/{config}')
        return _FakeDataset(tables[(name, config)])
    mod.load_dataset = load_dataset
    return mod


def test_hf_loaders_convert_to_the_items_format(monkeypatch):
    tables = {
        ('juletxara/mgsm', 'en'): pd.DataFrame({'question': ['2+3?', '4*5?'], 'answer_number': [5, 20]}),
        ('juletxara/mgsm', 'fr'): pd.DataFrame({'question': ['2+3 ?', '4*5 ?'], 'answer_number': [5, 20]}),
        ('google/xquad', 'xquad.en'): pd.DataFrame({'id': ['q1'], 'context': ['Paris is in France.'], 'question': ['Where is Paris?'],
                                                    'answers': [{'text': ['France'], 'answer_start': [12]}]}),
        ('google/xquad', 'xquad.de'): pd.DataFrame({'id': ['q1'], 'context': ['Paris liegt in Frankreich.'], 'question': ['Wo liegt Paris?'],
                                                    'answers': [{'text': ['Frankreich'], 'answer_start': [15]}]}),
        ('li-lab/MMLU-ProX', 'en'): pd.DataFrame({'question_id': [7], 'question': ['Capital of France?'], 'options': [['Rome', 'Paris', 'Oslo']],
                                                  'answer': ['B'], 'category': ['geo']}),
    }
    monkeypatch.setitem(sys.modules, 'datasets', _fake_datasets(tables))
    mgsm = tasks.load_mgsm('en,fr')
    assert len(mgsm) == 4 and mgsm.gold.tolist() == ['5', '20', '5', '20'] and mgsm.item_id.nunique() == 2
    xq = tasks.load_xquad('en,de')
    assert xq.gold_text.tolist() == ['France', 'Frankreich']
    s = tasks.score_responses(xq.assign(target='de', response=['Frankreich.', 'France']))
    assert s.correct.all()                               # the answer in any loaded language counts
    mm = tasks.load_mmlu_prox('en')
    assert mm.gold.iat[0] == 'B' and mm.n_options.iat[0] == 3 and 'B) Paris' in mm.content.iat[0]
    sp = tasks.scenario_prompts(None, pd.concat([mgsm]), ['fr'])
    assert len(sp) == 2 * 4
    with pytest.raises(MultilingError, match='could not load'):
        tasks.load_mgsm('de')                            # not in the stand-in: the loader's error, not a crash


def test_hf_loaders_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, 'datasets', None)   # `import datasets` raises ImportError
    for loader in (tasks.load_mgsm, tasks.load_xquad, tasks.load_mmlu_prox):
        with pytest.raises(MultilingError, match='datasets'):
            loader('en')

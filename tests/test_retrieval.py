"Retrieval heads: scoring rules on hand-made attention, needle construction and position mapping, masking wiring."
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import pandas as pd, pytest, torch
from transformers import GPT2Config, GPT2LMHeadModel
from multiling.core import MultilingError
from multiling.models import tiny_tokenizer, wrap_model
from multiling import retrieval as R


@pytest.fixture(scope='module')
def model():
    "A tiny random GPT-2 with a 512-token context (the tiny tokenizer spends about a token per character)."
    tok = tiny_tokenizer(); torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=512, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, attn_implementation='eager')
    return wrap_model(GPT2LMHeadModel(cfg), tok, name='tiny-gpt2-512')


@pytest.fixture(scope='module')
def corpus():
    n = 200
    return pd.DataFrame({'verse_id': range(n), 'en': [f'Ve{i}.' for i in range(n)], 'fr': [f'Vt{i} et.' for i in range(n)],
                         'ru': [f'Ст{i}.' for i in range(n)]})


def one_hot(rows):
    "Attention [1, n_heads, n_steps, n_keys] with all the weight on the given key per (head, step)."
    n_keys = 1 + max(k for r in rows for k in r)
    a = torch.full((1, len(rows), len(rows[0]), n_keys), 0.01)
    for h, r in enumerate(rows):
        for s, k in enumerate(r): a[0, h, s, k] = 1.0
    return a


def test_retrieval_rule_copy_inside_needle():
    ctx = [5, 6, 7, 8, 6, 9]          # needle = keys 1..3 holding 6, 7, 8; key 4 holds 6 again (outside)
    target = [6, 7, 8]
    attn = one_hot([[1, 2, 3],        # head 0: copies each token from the needle: 3 hits
                    [4, 2, 0],        # head 1: 6 but outside the needle, then 7 inside (hit), then outside
                    [2, 3, 1],        # head 2: inside the needle, wrong tokens: 0 hits
                    [5, 5, 5]])       # head 3: elsewhere
    hits = R.retrieval_hits(attn, ctx, target, (1, 4))
    assert hits.shape == (1, 4, 3)
    assert hits.sum(-1).tolist() == [[3, 1, 0, 0]]
    assert hits.mean(-1)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.0])


def test_transition_rule_attends_source_span():
    attn = one_hot([[2, 3], [2, 0], [1, 4]])
    hits = R.transition_hits(attn, (2, 4))   # source value = keys 2, 3 (language A)
    assert hits.sum(-1).tolist() == [[2, 1, 0]]
    assert R.span_mass(attn, (2, 4)).shape == (1, 3, 2)


def test_argmax_ties_and_needle_edges():
    # the end of the span is exclusive; a hit at the first needle key counts
    attn = one_hot([[1], [4]])
    assert R.retrieval_hits(attn, [0, 3, 0, 0, 3], [3], (1, 4)).sum(-1).tolist() == [[1, 0]]


def test_needle_prompts_parallel_and_spans(model, corpus):
    ps = R.build_needle_prompts(model, corpus, 'en,fr,ru', lengths=(40,), depths=(0.5,),
                                pairs=[('en', 'en'), ('fr', 'fr'), ('ru', 'ru'), ('fr', 'en')])
    assert len(ps) == 4
    dec = lambda p, s: model.tokenizer.decode(p.ids[s[0]:s[1]])
    for p in ps:
        a, b = p.meta['needle_lang'], p.meta['ask_lang']
        value_a = R.NEEDLE_VALUES[p.meta['value_id']][a]
        assert dec(p, p.value).strip().endswith(value_a) or value_a in dec(p, p.value)
        assert p.needle[0] <= p.value[0] < p.value[1] <= p.needle[1]
        assert p.answer == ' ' + R.NEEDLE_VALUES[p.meta['value_id']][b]
        assert p.text.endswith(R.NEEDLES[b]['lead'])
        assert p.answer_ids and model.tokenizer.decode(p.ids + p.answer_ids).endswith(p.answer)
    # the same verses before the needle in every language (parallel haystacks)
    before = [p.text.split(R.NEEDLES[p.meta['needle_lang']]['needle'].split('{v}')[0])[0] for p in ps[:3]]
    assert before[0].count('Ve') == before[1].count('Vt') == before[2].count('Ст') > 0
    # cross pair: needle in fr, question in en; its value span is the fr value
    assert 'Le mot secret' in dec(ps[3], ps[3].needle) and ps[3].answer.strip() == R.NEEDLE_VALUES[ps[3].meta['value_id']]['en']


def test_needle_prompts_bad_input(model, corpus):
    with pytest.raises(MultilingError): R.build_needle_prompts(model, corpus, 'en', lengths=(1000,))   # over the context
    with pytest.raises(MultilingError): R.build_needle_prompts(model, corpus, 'en', depths=(1.5,), lengths=(40,))
    with pytest.raises(MultilingError): R.build_needle_prompts(model, corpus, 'en,de', lengths=(40,))  # no de column


def test_answer_attention_matches_single_pass(model, corpus):
    from multiling.interventions import forward
    ps = R.build_needle_prompts(model, corpus, 'en,fr', lengths=(30,), depths=(0.5,), pairs=[('en', 'en'), ('en', 'fr')])
    att = R.answer_attention(model, [(p.ids, p.answer_ids) for p in ps], batch_size=2)
    for p, a in zip(ps, att):
        one = forward(model, model.encode(ids=[p.ids + p.answer_ids], add_bos=False), attentions=True)['attentions'][:, 0]
        n = len(p.ids)
        assert torch.allclose(a, one[:, :, n - 1:n - 1 + len(p.answer_ids)].float(), atol=1e-5)


def test_masking_wiring_changes_logits(model, corpus):
    "Masking goes through interventions.ablate_heads: ablating all heads changes the output, ablating none does not."
    from multiling.interventions import forward, ablate_heads
    ps = R.build_needle_prompts(model, corpus, 'en', lengths=(30,), depths=(0.5,))
    batch = model.encode(ids=[ps[0].ids], add_bos=False)
    clean = forward(model, batch)['logits']
    assert torch.allclose(forward(model, batch, interventions=ablate_heads())['logits'], clean)
    masked = forward(model, batch, interventions=ablate_heads(*model.adapter.heads))['logits']
    assert not torch.allclose(masked, clean)
    acc = R.masking_sweep(model, ps, {'none': [], 'all': model.adapter.heads}, max_new_tokens=2)
    assert set(acc.condition) == {'none', 'all'} and acc.n_masked.tolist() == [0, 8]


def test_top_and_random_heads(model):
    t = pd.DataFrame(dict(layer=[0, 0, 1, 1], head=[0, 1, 0, 1], retrieval=[0.0, 0.0, 0.5, 0.0],
                          retrieval_mass=[0.1, 0.7, 0.0, 0.2]))
    assert R.top_heads(t, 'retrieval', 3) == [(1, 0), (0, 1), (1, 1)]
    r = R.random_heads(model, 4, seed=1)
    assert len(set(r)) == 4 and r == R.random_heads(model, 4, seed=1)
    with pytest.raises(MultilingError): R.random_heads(model, 100, seed=0)


def test_masking_sweep_tasks_equals_clean_generation(model):
    "On a task table: the clean condition is the clean generation; a masked condition equals its own separate run."
    from multiling import tasks as T
    from multiling.interventions import generate, ablate_heads
    tp = T.fit_context(model, T.scenario_prompts(model, T.task_items('en,fr', 1, tasks=('arithmetic',)), ['fr'],
                                                 scenarios=(('target', 'target'), ('target', 'en'))), 3)
    sets = {'none': [], 'two': [(0, 1), (1, 3)]}
    r = R.masking_sweep(model, tp, sets, max_new_tokens=3, batch_size=3)
    assert len(r) == 2 * len(tp) and r.run.tolist() == list(range(len(tp))) * 2
    assert r[r.condition == 'none'].response.tolist() == generate(model, tp.prompt.tolist(), max_new_tokens=3)
    assert r[r.condition == 'two'].response.tolist() == generate(model, tp.prompt.tolist(), ablate_heads(*sets['two']), max_new_tokens=3)
    assert r.groupby('condition').n_masked.first().to_dict() == {'none': 0, 'two': 2}


def fake_generate(answers):
    "A stand-in for `interventions.generate`: row i answers `answers(prompt, heads)`, so that the scores are known."
    def gen(model, prompts, interventions=None, **kw):
        ivs = interventions if isinstance(interventions, list) else [interventions] * len(prompts)
        return [answers(p, tuple(iv.heads) if iv is not None else ()) for p, iv in zip(prompts, ivs)]
    return gen


def test_masking_sweep_accuracy_is_a_hand_count(model, corpus, monkeypatch):
    "Per-row wiring: each (prompt, condition) row is scored on its own answer; a condition's accuracy equals a hand count."
    import multiling.interventions as I
    from multiling import tasks as T
    items = T.task_items('en,fr', 3, tasks=('arithmetic', 'qa'))
    tp = T.scenario_prompts(None, items, ['fr'], scenarios=(('target', 'target'), ('target', 'en')))
    gold = dict(zip(tp.prompt, tp.gold_text))
    rank = {p: i for i, p in enumerate(tp.prompt)}
    # clean: right on even prompts; L0H0 masked: right on prompts divisible by 3; any other mask: never right
    def answers(prompt, heads):
        ok = rank[prompt] % 2 == 0 if not heads else rank[prompt] % 3 == 0 if heads == ((0, 0),) else False
        return f' {gold[prompt]}.' if ok else ' nothing'
    monkeypatch.setattr(I, 'generate', fake_generate(answers))
    r = R.masking_sweep(model, tp, {'none': [], 'h00': [(0, 0)], 'h11': [(1, 1)]})
    n = len(tp)
    acc = r.groupby('condition').correct.mean()
    assert acc['none'] == sum(i % 2 == 0 for i in range(n)) / n
    assert acc['h00'] == sum(i % 3 == 0 for i in range(n)) / n and acc['h11'] == 0
    c = R.masking_contrast(r, 'h00', 'none')
    assert c['diff'].item() == pytest.approx(acc['h00'] - acc['none']) and c.n.item() == n
    # the needle path goes through the same loop
    ps = R.build_needle_prompts(model, corpus, 'en', lengths=(30,), depths=(0.1, 0.5, 0.9))
    by_text = {p.text: p for p in ps}
    monkeypatch.setattr(R, 'generate', fake_generate(lambda t, h: by_text[t].answer if not h else ' no'))
    r = R.masking_sweep(model, ps, {'none': [], 'h00': [(0, 0)]}, logprob=False)
    assert r.groupby('condition').correct.mean().to_dict() == {'h00': 0.0, 'none': 1.0}


def test_masking_bad_input(model):
    with pytest.raises(MultilingError): R.masking_sweep(model, [], {'none': []})
    with pytest.raises(MultilingError): R.masking_sweep(model, ['not a prompt'], {'none': []})
    runs = pd.DataFrame(dict(run=[0, 1], condition=['a', 'a'], correct=[1, 0]))
    with pytest.raises(MultilingError): R.masking_contrast(runs, 'a', 'b')


@pytest.mark.parametrize('continuation,value,lang,ok', [
    (' le lion. Dans la', 'lion', 'fr', True), (' le lion.\nQuestion', 'lion', 'fr', True),   # issue 17: en -> fr
    (' the lion.\nQuestion', 'lion', 'en', True),                                             # issue 17: it -> en
    (' "leone".\n', 'leone', 'it', True), (" l'argent", 'argent', 'fr', True), (' die Löwe', 'Löwe', 'de', True),
    (' "lion". En la', 'león', 'es', False), (' o lion.', 'leão', 'pt', False),              # copies, not translations
    (' the blue house.', 'lion', 'en', False), (' le lion', 'lion', 'en', False), (' lapin', 'pain', 'fr', False)])
def test_needle_answer_in_its_target_language_forms(continuation, value, lang, ok):
    assert R.is_correct(continuation, ' ' + value, lang=lang) is ok

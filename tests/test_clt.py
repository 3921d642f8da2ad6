"""Cross-layer transcoder: save/load round trip, and attribution-graph edges against a hand computation on a tiny GPT-2."""
import json
import pytest
import torch

from multiling.core import MultilingError
from multiling.models import tiny_model
from multiling.interventions import forward
from multiling.clt import (CLT, CLTConfig, collect_activations, train_clt, save_clt, load_clt, spliced_forward,
                           next_token_loss, clt_metrics)
from multiling.clt_graph import attribution_edges, _ReplacementRun

TEXTS = ["The weather is nice today and we walk to the market.", "Le temps est beau aujourd'hui et nous allons au marché.",
         "Das Wetter ist heute schön und wir gehen zum Markt.", "Hoy hace buen tiempo y caminamos al mercado."]


@pytest.fixture(scope='module')
def tiny():
    return tiny_model('gpt2')


@pytest.fixture(scope='module')
def trained(tiny):
    acts = collect_activations(tiny, TEXTS * 4)
    clt, _ = train_clt(acts, CLTConfig(n_layers=2, d_model=32, n_features=64, sparsity_coef=5e-4, threshold_init=0.2),
                       steps=80, batch_size=128)
    return clt, acts


@pytest.mark.parametrize('activation', ['jumprelu', 'topk'])
def test_save_load_round_trip(tmp_path, tiny, activation):
    acts = collect_activations(tiny, TEXTS)
    clt, _ = train_clt(acts, CLTConfig(n_layers=2, d_model=32, n_features=40, activation=activation, k=4), steps=20, batch_size=64)
    save_clt(clt, tmp_path / 'clt')
    cfg = json.loads((tmp_path / 'clt' / 'clt.json').read_text())
    assert cfg['activation'] == activation and cfg['n_features'] == 40 and cfg['meta']['train_steps'] == 20
    back = load_clt(tmp_path / 'clt')
    assert back.cfg == clt.cfg
    for (k, a), (k2, b) in zip(clt.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    batch = tiny.encode(TEXTS[:2])
    assert torch.equal(spliced_forward(tiny, clt, batch), spliced_forward(tiny, back, batch))
    assert clt_metrics(back, acts).equals(clt_metrics(clt, acts))


def test_load_missing(tmp_path):
    with pytest.raises(MultilingError, match='no CLT'):
        load_clt(tmp_path)


def test_bad_config():
    with pytest.raises(MultilingError):
        CLT(CLTConfig(n_layers=2, d_model=8, activation='relu'))


def _loop_decode(clt, acts):
    "Every layer's reconstruction as a loop over (source, target) pairs, one small matmul each (the pre-batching code)."
    L = clt.cfg.n_layers
    return torch.stack([(clt.b_dec[t] + sum(acts[l] @ clt.W_dec[l][t - l] for l in range(t + 1))) / clt.out_scale[t]
                        for t in range(L)])


def test_batched_decode_equals_the_pair_loop_with_its_gradients():
    torch.manual_seed(0)
    clt = CLT(CLTConfig(n_layers=5, d_model=24, n_features=12))
    with torch.no_grad():
        for w in [*clt.W_dec, clt.b_dec]: w.normal_()
        clt.out_scale.uniform_(0.5, 2.0)
    acts = torch.rand(5, 3, 7, 12).requires_grad_()                     # [L, batch, pos, F]
    fast, slow = clt.decode(acts), _loop_decode(clt, acts)
    assert fast.shape == (5, 3, 7, 24) and torch.allclose(fast, slow, atol=1e-5, rtol=1e-5)
    for t in range(5):
        assert torch.allclose(clt.decode_layer([acts[l] for l in range(t + 1)], t), slow[t], atol=1e-5, rtol=1e-5)
    # training differentiates the decode: the same gradients for the activations and every decoder
    probe = torch.randn_like(fast)
    g_fast = torch.autograd.grad((fast * probe).sum(), [acts, *clt.W_dec, clt.b_dec])
    g_slow = torch.autograd.grad((slow * probe).sum(), [acts, *clt.W_dec, clt.b_dec])
    for a, b in zip(g_fast, g_slow): assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)
    # the parameters keep their names and shapes: CLT files saved before the batching load unchanged
    assert [k for k in clt.state_dict() if k.startswith('W_dec')] == [f'W_dec.{l}' for l in range(5)]
    assert [tuple(w.shape) for w in clt.W_dec] == [(5 - l, 12, 24) for l in range(5)]


def _hand_edge(model, clt, batch, src, dst):
    """Direct effect of feature src=(0, p, f) on the pre-activation of dst=(1, q, g), written out with GPT-2's weights:
    the decoder vector enters the residual stream at p; block 1's LayerNorms divide by the clean run's standard
    deviations; attention uses the clean run's patterns and is linear in the values."""
    hf = model.hf; d = hf.config.n_embd; H = hf.config.n_head; hd = d // H
    (l, p, f), (l2, q, g) = src, dst
    assert l == 0 and l2 == 1
    blk = hf.transformer.h[1]
    caught = {}
    hooks = [blk.ln_1.register_forward_pre_hook(lambda m, i: caught.__setitem__('x', i[0].detach())),
             blk.ln_2.register_forward_pre_hook(lambda m, i: caught.__setitem__('m', i[0].detach()))]
    with torch.no_grad():
        out = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, output_attentions=True)
        acts = clt.encode(forward(model, batch, save=['mlp_in'])['mlp_in'][:, 0])
    for h in hooks: h.remove()
    A = out.attentions[1][0]                                                # [H, q, k]
    def frozen_ln(ln, x_clean, dx):
        sd = (x_clean.var(-1, unbiased=False) + ln.eps).sqrt()
        return (dx - dx.mean()) / sd * ln.weight
    with torch.no_grad():
        v0 = clt.decoder_vector(0, f, 0)                                    # what the feature adds to MLP-0's output
        du = frozen_ln(blk.ln_1, caught['x'][0, p], v0)                     # LayerNorm 1 at position p
        dv = du @ blk.attn.c_attn.weight[:, 2 * d:3 * d]                    # value (Conv1D: weight is [in, out])
        dz = torch.cat([A[h, q, p] * dv[h * hd:(h + 1) * hd] for h in range(H)])
        dattn = dz @ blk.attn.c_proj.weight
        dm = dattn + (v0 if p == q else 0)
        dmlp_in = frozen_ln(blk.ln_2, caught['m'][0, q], dm)
        dpre = clt.in_scale[1] * dmlp_in @ clt.W_enc[1][:, g]
    return float(acts[l, p, f] * dpre)


def test_edges_match_hand_computation(tiny, trained):
    clt, _ = trained
    batch = tiny.encode([TEXTS[1]])
    r = attribution_edges(tiny, clt, batch, target=(5, 7), max_nodes=400)
    nodes, M = r['nodes'].tolist(), r['matrix']
    src = [i for i, n in enumerate(nodes) if n[0] == 0]
    dst = [i for i, n in enumerate(nodes) if n[0] == 1]
    assert src and dst
    checked = same_pos = 0
    for j in dst[:6]:
        for i in src:
            if nodes[i][1] > nodes[j][1]: continue                          # causal: no edge from a later position
            hand = _hand_edge(tiny, clt, batch, nodes[i], nodes[j])
            assert abs(hand - float(M[j, i])) <= 1e-4 + 1e-3 * abs(hand), (nodes[i], nodes[j], hand, float(M[j, i]))
            checked += 1; same_pos += nodes[i][1] == nodes[j][1]
    assert checked >= 10 and same_pos >= 1 and checked - same_pos >= 1
    # an edge from a later position to an earlier one is zero
    later = [(i, j) for j in dst for i in src if nodes[i][1] > nodes[j][1]]
    assert all(float(M[j, i]) == 0 for i, j in later)


def test_target_edges_match_finite_difference(tiny, trained):
    "Edge to the target (logit difference) = a x d(target)/da, measured by perturbing the activation in the replacement model."
    clt, _ = trained
    batch = tiny.encode([TEXTS[0]])
    r = attribution_edges(tiny, clt, batch, target=(5, 7), max_nodes=400)
    run = _ReplacementRun(tiny, clt, batch); n = len(r['nodes'])
    with torch.no_grad():
        base = run.run(run.acts)[0][-1]
        for i, (l, p, f) in enumerate(r['nodes'].tolist()[:8]):
            pert = run.acts.clone(); pert[l, p, f] += 1e-2
            new = run.run(pert)[0][-1]
            fd = float(((new[5] - new[7]) - (base[5] - base[7])) / 1e-2 * run.acts[l, p, f])
            assert abs(fd - float(r['matrix'][n, i])) <= 1e-3 + 1e-2 * abs(fd)


def _hand_loss(model, texts, clt=None):
    """Mean next-token cross-entropy of `texts`, one text at a time (no padding), from Hugging Face's own loss; with
    `clt`, every MLP output replaced by the CLT's reconstruction through plain forward hooks."""
    a = model.adapter; total = count = 0
    for text in texts:
        ids = torch.tensor([model.tokenizer(text, add_special_tokens=False).input_ids[:64]])
        feats, hooks = [], []
        if clt is not None:
            for l in range(a.n_layers):
                hooks.append(a.get(model.hf, a.mlp_norm, l).register_forward_hook(
                    lambda m, i, out, l=l: feats.append(clt.encode(out.float(), l))))
                hooks.append(a.get(model.hf, a.mlp, l).register_forward_hook(
                    lambda m, i, out, l=l: clt.decode_layer(feats[:l + 1], l)))
        try:
            with torch.no_grad(): loss = float(model.hf(input_ids=ids, labels=ids).loss)
        finally:
            for h in hooks: h.remove()
        total += loss * (ids.shape[1] - 1); count += ids.shape[1] - 1
    return total / count


def test_spliced_loss_matches_a_hand_splice(tiny, trained):
    "The clean and spliced next-token losses against HF's own loss, text by text, with the splice written as plain hooks."
    clt, _ = trained
    constant = CLT(clt.cfg)   # zero decoders and a large bias: every MLP output replaced by a constant vector
    g = torch.Generator().manual_seed(0)
    constant.load_state_dict({k: (10 * torch.randn(v.shape, generator=g) if k == 'b_dec' else torch.zeros_like(v))
                              if 'dec' in k else v for k, v in clt.state_dict().items()})
    clean = next_token_loss(tiny, TEXTS)
    assert abs(clean - _hand_loss(tiny, TEXTS)) < 1e-4                # padding, positions and the loss path
    for c in (clt, constant):
        assert abs(next_token_loss(tiny, TEXTS, c) - _hand_loss(tiny, TEXTS, c)) < 1e-4   # the splice itself
    assert abs(next_token_loss(tiny, TEXTS, constant) - clean) > 1e-2  # so that the comparison is not vacuous


@pytest.mark.parametrize('family', ['llama', 'gemma'])
def test_replacement_model_other_families(family):
    "On Llama/Gemma (RMSNorm, GQA; Gemma's (1 + w) norms and post-MLP norm) the replacement model reproduces the clean target."
    m = tiny_model(family)
    acts = collect_activations(m, TEXTS * 2)
    clt, _ = train_clt(acts, CLTConfig(n_layers=2, d_model=32, n_features=32, threshold_init=0.1), steps=20, batch_size=64)
    r = attribution_edges(m, clt, TEXTS[2], target=(5, 7))
    assert abs(r['target_value'] - r['clean_target']) < 1e-3
    assert torch.isfinite(r['matrix']).all()

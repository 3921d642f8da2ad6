"""Independent cross-check of head ablation (issue 10).

`multiling.interventions.forward(..., ablate_heads(...))` is compared with
(1) a from-scratch GPT-2 forward pass written below in plain torch from the raw weights (token + position
    embeddings, LayerNorm, causal multi-head attention with a padding mask, GELU MLP, tied unembedding), where a
    head is ablated by zeroing its z (the head's output before the output projection) — always runs;
(2) a from-scratch Gemma-3 forward pass, likewise (scaled embeddings, RMSNorm with its (1 + w) gain, grouped-query
    attention with q/k norms and rotary positions, the norms after attention and MLP, the gated GELU MLP) — always runs;
(3) the same from-scratch GPT-2 with the attention patterns and LayerNorm stds of another run held: the engine's
    frozen forward pass replayed on shifted embeddings (`forward(..., freeze=FREEZE, record=...)`, what the CLT's
    attribution graph differentiates) — always runs;
(4) TransformerLens's `blocks.L.attn.hook_z` ablation (TransformerLens 4: a `TransformerBridge`) — only if
    `transformer_lens` is importable (`pip install -e '.[crosscheck]'`).
"""
import math
import pytest
import torch
from multiling.models import tiny_hf_model, wrap_model
from multiling.interventions import FREEZE, Edit, Intervention, ablate_heads, forward

TEXTS = ["The weather is nice today and we walk to the market.", "Le temps est beau.",
         "Сегодня хорошая погода", "今天天气很好，我们去市场。"]
ATOL = 1e-4


@pytest.fixture(scope='module')
def model():
    hf, tok = tiny_hf_model('gpt2', seed=0)
    # GPT-2's init (std 0.02) makes every head nearly irrelevant; larger weights make an ablation move the logits
    # by far more than the tolerance, so that agreement is informative
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if 'ln' in name: p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith('weight') else 0.1 * torch.randn(p.shape, generator=g))
            else: p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return wrap_model(hf, tok, name='tiny-gpt2-crosscheck')


def _ln(x, w, b, eps, std=None):
    "LayerNorm; with `std`, dividing by that instead of x's own standard deviation."
    mu = x.mean(-1, keepdim=True)
    if std is None: std = torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    return (x - mu) / std * w + b


def _std(x, eps):
    return torch.sqrt(((x - x.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True) + eps)


def _gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2_from_scratch(sd, cfg, input_ids, attention_mask, zero_heads, shift=None, held=None):
    """GPT-2 logits from the state dict `sd` alone. `zero_heads[i]` = set of (layer, head) whose z is zeroed in row i.
    Left padding: positions count real tokens only; padded keys are masked. `shift` is added to the token
    embeddings; `held`, a dict, is filled with every attention pattern and LayerNorm std of the run when it is empty,
    and used instead of the run's own when it is not."""
    b, p = input_ids.shape
    nh, d = cfg.n_head, cfg.n_embd; hd = d // nh; eps = cfg.layer_norm_epsilon
    keep = (lambda key, value: value) if held is None else held.setdefault
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    x = sd['transformer.wte.weight'][input_ids] + (0 if shift is None else shift) + sd['transformer.wpe.weight'][pos]
    causal = torch.tril(torch.ones(p, p, dtype=torch.bool))
    allowed = causal[None] & attention_mask.bool()[:, None, :]            # [b, q, k]
    for L in range(cfg.n_layer):
        pre = f'transformer.h.{L}.'
        h = _ln(x, sd[pre + 'ln_1.weight'], sd[pre + 'ln_1.bias'], eps, std=keep(('ln_1', L), _std(x, eps)))
        qkv = h @ sd[pre + 'attn.c_attn.weight'] + sd[pre + 'attn.c_attn.bias']   # Conv1D: x @ W + b, W [in, out]
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = (t.reshape(b, p, nh, hd).transpose(1, 2) for t in (q, k, v))    # [b, nh, p, hd]
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        z = keep(('pattern', L), scores.softmax(-1)) @ v                          # [b, nh, p, hd]
        for i, heads in enumerate(zero_heads):
            for (l, hh) in heads:
                if l == L: z[i, hh] = 0
        z = z.transpose(1, 2).reshape(b, p, d)
        x = x + z @ sd[pre + 'attn.c_proj.weight'] + sd[pre + 'attn.c_proj.bias']
        h = _ln(x, sd[pre + 'ln_2.weight'], sd[pre + 'ln_2.bias'], eps, std=keep(('ln_2', L), _std(x, eps)))
        h = _gelu_new(h @ sd[pre + 'mlp.c_fc.weight'] + sd[pre + 'mlp.c_fc.bias'])
        x = x + h @ sd[pre + 'mlp.c_proj.weight'] + sd[pre + 'mlp.c_proj.bias']
    x = _ln(x, sd['transformer.ln_f.weight'], sd['transformer.ln_f.bias'], eps, std=keep('ln_f', _std(x, eps)))
    return x @ sd['transformer.wte.weight'].T                                    # tied unembedding


def _real(batch):
    return batch.attention_mask.bool()


def _scratch(model, batch, zero_heads):
    sd = {k: v.detach().float() for k, v in model.hf.state_dict().items()}
    with torch.no_grad():
        return gpt2_from_scratch(sd, model.hf.config, batch.input_ids, batch.attention_mask, zero_heads)


def test_clean_model_matches_from_scratch(model):
    batch = model.encode(TEXTS)
    assert (batch.attention_mask == 0).any(), "the batch must be padded for this test to mean something"
    ours = forward(model, batch)['logits']
    ref = _scratch(model, batch, [set()] * len(TEXTS))
    m = _real(batch)
    torch.testing.assert_close(ours[m], ref[m], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize('heads', [((0, 0),), ((0, 3),), ((1, 1),), ((1, 2),), ((0, 1), (1, 3)), ((0, 0), (0, 1), (0, 2), (0, 3))])
def test_head_ablation_matches_from_scratch(model, heads):
    batch = model.encode(TEXTS)
    ours = forward(model, batch, ablate_heads(*heads))['logits']
    ref = _scratch(model, batch, [set(heads)] * len(TEXTS))
    clean = forward(model, batch)['logits']
    m = _real(batch)
    torch.testing.assert_close(ours[m], ref[m], atol=ATOL, rtol=1e-4)
    # the ablation does something far above the tolerance, so the agreement above is not vacuous
    assert (ours[m] - clean[m]).abs().max() > 100 * ATOL


def test_per_row_ablation_in_padded_batch_matches_from_scratch(model):
    rows = [((0, 0),), (), ((1, 2), (0, 3)), ((1, 0),)]
    batch = model.encode(TEXTS)
    ours = forward(model, batch, [ablate_heads(*h) if h else Intervention() for h in rows])['logits']
    ref = _scratch(model, batch, [set(h) for h in rows])
    m = _real(batch)
    torch.testing.assert_close(ours[m], ref[m], atol=ATOL, rtol=1e-4)
    # each row alone (no padding at all) gives the same logits at its real positions
    for i, text in enumerate(TEXTS):
        single = model.encode([text])
        alone = _scratch(model, single, [set(rows[i])])[0]
        torch.testing.assert_close(ref[i][m[i]], alone, atol=ATOL, rtol=1e-4)


def test_frozen_replay_matches_from_scratch(model):
    """The engine's frozen forward pass replayed on shifted embeddings equals the from-scratch GPT-2 run on them with
    the clean run's attention patterns and LayerNorm stds; the shifted run's own patterns and stds give other logits."""
    batch = model.encode(TEXTS)
    g = torch.Generator().manual_seed(3)
    shift = 0.3 * torch.randn(*batch.input_ids.shape, model.adapter.d_model, generator=g)
    rec = {}
    forward(model, batch, freeze=FREEZE, record=rec)
    ours = forward(model, batch, freeze=FREEZE, record=rec, edits=[Edit('embed', lambda e: e + shift)])['logits']
    sd = {k: v.detach().float() for k, v in model.hf.state_dict().items()}
    none = [set()] * len(TEXTS)
    held = {}
    with torch.no_grad():
        gpt2_from_scratch(sd, model.hf.config, batch.input_ids, batch.attention_mask, none, held=held)   # the clean run
        ref = gpt2_from_scratch(sd, model.hf.config, batch.input_ids, batch.attention_mask, none, shift=shift, held=held)
        own = gpt2_from_scratch(sd, model.hf.config, batch.input_ids, batch.attention_mask, none, shift=shift)
    m = _real(batch)
    torch.testing.assert_close(ours[m], ref[m], atol=ATOL, rtol=1e-4)
    assert (own[m] - ref[m]).abs().max() > 100 * ATOL   # holding the patterns and stds matters here


# ---- Gemma-3 from scratch ----

@pytest.fixture(scope='module')
def gemma():
    hf, tok = tiny_hf_model('gemma', seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():   # as for GPT-2: weights large enough that a head matters; norm gains (1 + w) away from 1
        for name, p in hf.named_parameters():
            p.copy_((0.3 if 'norm' in name else 0.4) * torch.randn(p.shape, generator=g))
    return wrap_model(hf, tok, name='tiny-gemma-crosscheck')


def _rms(x, w, eps):
    x = x.float()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1 + w)


def gemma3_from_scratch(sd, cfg, input_ids, attention_mask, zero_heads):
    """Gemma-3 logits from the state dict `sd` alone (every layer within its sliding window here: plain causal
    attention). `zero_heads[i]` = set of (layer, head) whose z is zeroed in row i."""
    b, p = input_ids.shape
    nh, nkv, hd, d, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size, cfg.rms_norm_eps
    assert all(t == 'sliding_attention' for t in cfg.layer_types) and cfg.sliding_window > p
    theta = cfg.rope_parameters['sliding_attention']['rope_theta']
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0).float()
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.cat([pos[..., None] * inv] * 2, -1)[:, None]                      # [b, 1, p, hd]
    rot = lambda t: torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
    rope = lambda t: t * ang.cos() + rot(t) * ang.sin()
    allowed = torch.tril(torch.ones(p, p, dtype=torch.bool))[None] & attention_mask.bool()[:, None, :]
    x = sd['model.embed_tokens.weight'][input_ids] * torch.tensor(d ** 0.5)
    for L in range(cfg.num_hidden_layers):
        pre = f'model.layers.{L}.'
        h = _rms(x, sd[pre + 'input_layernorm.weight'], eps)
        heads = lambda name, n: (h @ sd[pre + f'self_attn.{name}.weight'].T).reshape(b, p, n, hd).transpose(1, 2)
        q = rope(_rms(heads('q_proj', nh), sd[pre + 'self_attn.q_norm.weight'], eps))
        k = rope(_rms(heads('k_proj', nkv), sd[pre + 'self_attn.k_norm.weight'], eps))
        v = heads('v_proj', nkv)
        k, v = (t.repeat_interleave(nh // nkv, 1) for t in (k, v))
        scores = q @ k.transpose(-1, -2) * cfg.query_pre_attn_scalar ** -0.5
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        z = scores.softmax(-1) @ v                                               # [b, nh, p, hd]
        for i, zeroed in enumerate(zero_heads):
            for l, hh in zeroed:
                if l == L: z[i, hh] = 0
        attn = z.transpose(1, 2).reshape(b, p, nh * hd) @ sd[pre + 'self_attn.o_proj.weight'].T
        x = x + _rms(attn, sd[pre + 'post_attention_layernorm.weight'], eps)
        h = _rms(x, sd[pre + 'pre_feedforward_layernorm.weight'], eps)
        gate = torch.nn.functional.gelu(h @ sd[pre + 'mlp.gate_proj.weight'].T, approximate='tanh')
        mlp = (gate * (h @ sd[pre + 'mlp.up_proj.weight'].T)) @ sd[pre + 'mlp.down_proj.weight'].T
        x = x + _rms(mlp, sd[pre + 'post_feedforward_layernorm.weight'], eps)
    return _rms(x, sd['model.norm.weight'], eps) @ sd['model.embed_tokens.weight'].T   # tied unembedding


@pytest.mark.parametrize('rows', [[()] * 4, [((0, 0),)] * 4, [((1, 2),), (), ((0, 1), (1, 3)), ((0, 3),)]])
def test_gemma_matches_from_scratch(gemma, rows):
    batch = gemma.encode(TEXTS)
    assert (batch.attention_mask == 0).any()
    ivs = [ablate_heads(*h) if h else Intervention() for h in rows]
    ours = forward(gemma, batch, ivs)['logits']
    sd = {k: v.detach().float() for k, v in gemma.hf.state_dict().items()}
    with torch.no_grad(): ref = gemma3_from_scratch(sd, gemma.hf.config, batch.input_ids, batch.attention_mask, [set(h) for h in rows])
    m = _real(batch)
    torch.testing.assert_close(ours[m], ref[m], atol=1e-3, rtol=1e-4)
    if any(rows):   # the ablation moves the logits far beyond the tolerance: the agreement is not vacuous
        assert (ours[m] - forward(gemma, batch)['logits'][m]).abs().max() > 1e-1


# ---- TransformerLens (optional extra) ----

def _bridge(model, tmp_path):
    """TransformerLens 4's TransformerBridge around a copy of the model (its own hook points, e.g. `blocks.L.attn.hook_z`)."""
    pytest.importorskip('transformer_lens.model_bridge')   # TransformerLens >= 4
    import copy
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge
    model.hf.save_pretrained(tmp_path); model.tokenizer.save_pretrained(tmp_path)  # TL reads the config and tokenizer from a folder
    return TransformerBridge.boot_transformers(str(tmp_path), hf_model=copy.deepcopy(model.hf),
                                               tokenizer=AutoTokenizer.from_pretrained(tmp_path), device='cpu')


@pytest.mark.parametrize('heads', [((0, 2),), ((1, 1), (0, 0))])
def test_head_ablation_matches_transformer_lens_hook_z(model, heads, tmp_path):
    ht = _bridge(model, tmp_path)
    for text in TEXTS:  # unpadded rows: TransformerLens and we then agree on positions without padding conventions
        batch = model.encode([text])
        ours = forward(model, batch, ablate_heads(*heads))['logits'][0]

        def zero(z, hook):
            L = int(hook.name.split('.')[1])
            for l, h in heads:
                if l == L: z[:, :, h] = 0
            return z
        hooks = [(f'blocks.{l}.attn.hook_z', zero) for l in sorted({l for l, _ in heads})]
        with torch.no_grad():
            theirs = ht.run_with_hooks(batch.input_ids, fwd_hooks=hooks)[0]
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)

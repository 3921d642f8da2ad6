"""Sharded sweeps (issue 9): sharded == unsharded in-process and on a local Ray cluster (CPU), a killed Ray worker's
shard re-runs without loss; a model split over devices by a device map gives the same intervened logits."""
import functools, os, signal, sys
from pathlib import Path
import pandas as pd
import pytest
import torch
from multiling.core import MultilingError
from multiling.shard import make_shards, merge_shards, run_shards, shard_path

KEYS = ['layer', 'head', 'prompt']
HEADS = [(l, h) for l in range(3) for h in range(4)]
PROMPTS = [f'prompt number {i}' for i in range(7)]


def toy_task(heads, prompts):
    return pd.DataFrame([{'layer': l, 'head': h, 'prompt': p, 'value': (l * 31 + h * 7 + len(p)) / 13}
                         for (l, h) in heads for p in prompts])


def killing_task(marker_dir, heads, prompts):
    "Kills its own worker process (SIGKILL) the first time it runs the shard that holds head (1, 2), prompt 3."
    marker = Path(marker_dir) / 'killed-once'
    if (1, 2) in [tuple(h) for h in heads] and 'prompt number 3' in prompts and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return toy_task(heads, prompts)


def unsharded():
    return toy_task(HEADS, PROMPTS).sort_values(KEYS, kind='stable').reset_index(drop=True)


# ---- in-process (always) ----

@pytest.mark.parametrize('hs,ps', [(None, None), (5, 3), (1, 1), (12, 2)])
def test_sharded_equals_unsharded_inprocess(tmp_path, hs, ps):
    paths = run_shards(toy_task, HEADS, PROMPTS, tmp_path, 'toy', heads_per_shard=hs, prompts_per_shard=ps)
    assert len(paths) == len(make_shards(len(HEADS), len(PROMPTS), hs, ps))
    merged = merge_shards(tmp_path, 'toy', sort_by=KEYS)
    pd.testing.assert_frame_equal(merged, unsharded())
    assert not merged.duplicated(KEYS).any()
    assert not list(tmp_path.rglob('*.tmp'))        # no temporary file left behind


def test_a_crash_mid_sweep_resumes_without_loss(tmp_path):
    calls = []
    def crashing(heads, prompts):
        calls.append((tuple(heads), tuple(prompts)))
        if len(calls) == 3: raise RuntimeError('boom')
        return toy_task(heads, prompts)
    with pytest.raises(RuntimeError):
        run_shards(crashing, HEADS, PROMPTS, tmp_path, 'toy', heads_per_shard=4, prompts_per_shard=4)
    done = sorted(p.name for p in (tmp_path / 'toy.shards').glob('*.parquet'))
    assert len(done) == 2                            # shards 0 and 1 finished; shard 2 left nothing behind
    calls.clear()
    run_shards(toy_task, HEADS, PROMPTS, tmp_path, 'toy', heads_per_shard=4, prompts_per_shard=4)
    pd.testing.assert_frame_equal(merge_shards(tmp_path, 'toy', sort_by=KEYS), unsharded())


def test_a_corrupt_shard_is_a_clear_error(tmp_path):
    paths = run_shards(toy_task, HEADS, PROMPTS, tmp_path, 'toy', heads_per_shard=6)
    paths[1].write_bytes(b'not parquet')
    with pytest.raises(MultilingError, match='cannot be read.*delete it'):
        merge_shards(tmp_path, 'toy', sort_by=KEYS)


def test_ray_backend_without_ray_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'ray', None)    # as if Ray were not installed
    with pytest.raises(MultilingError, match=r"pip install -e '.\[ray\]'"):
        run_shards(toy_task, HEADS, PROMPTS, tmp_path, 'toy', backend='ray')
    assert not list((tmp_path / 'toy.shards').glob('*.parquet'))


# ---- the LIHA sweep, sharded (in-process) ----

def test_liha_sweep_sharded_equals_unsharded(tmp_path):
    from multiling import shard
    model_dir = tmp_path / 'model'
    from multiling.models import tiny_hf_model
    hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(model_dir); tok.save_pretrained(model_dir)
    task, heads, prompts, keys = shard.liha_sweep(str(model_dir), n_prompts=2, languages='en,fr', max_new_tokens=3)
    full = task(heads, prompts).sort_values(keys, kind='stable').reset_index(drop=True)
    assert list(full.columns) == ['model', 'layer', 'head', 'lang', 'prompt_id', 'prompt', 'clean_text', 'ablated_text',
                                  'clean_lang', 'ablated_lang'] and len(full) == len(heads) * len(prompts)
    run_shards(task, heads, prompts, tmp_path / 'out', 'liha', heads_per_shard=3, prompts_per_shard=2)
    merged = merge_shards(tmp_path / 'out', 'liha', sort_by=keys)
    pd.testing.assert_frame_equal(merged, full)
    # the sharded table is the LIHA engine's table (liha.liha_generations on the whole sweep)
    from multiling.data import load_prompts
    from multiling.liha import liha_generations
    engine = liha_generations(shard.cached_model(str(model_dir)), load_prompts(languages='en,fr', n=2),
                              'en,fr', max_new_tokens=3)
    pd.testing.assert_frame_equal(merged, engine)



def test_liha_sweep_of_retrained_weights_is_not_merged_with_old_shards(tmp_path):
    # same folder name, other weights: the old shards must be refused, not resumed
    from multiling import shard
    from multiling.models import tiny_hf_model
    model_dir = tmp_path / 'model'
    hf, tok = tiny_hf_model('gpt2', seed=0); hf.save_pretrained(model_dir); tok.save_pretrained(model_dir)
    task, heads, prompts, keys = shard.liha_sweep(str(model_dir), n_prompts=1, languages='en', max_new_tokens=2)
    run_shards(task, heads[:2], prompts, tmp_path / 'out', 'liha', heads_per_shard=1)
    old = shard.cached_model(str(model_dir)).weights_hash
    hf, tok = tiny_hf_model('gpt2', seed=1); hf.save_pretrained(model_dir); tok.save_pretrained(model_dir)
    # no cache to clear: the cached model is keyed by its weights' files, so the re-trained weights are loaded
    assert shard.cached_model(str(model_dir)).weights_hash != old
    task, heads, prompts, keys = shard.liha_sweep(str(model_dir), n_prompts=1, languages='en', max_new_tokens=2)
    with pytest.raises(MultilingError, match='other settings'):
        run_shards(task, heads[:2], prompts, tmp_path / 'out', 'liha', heads_per_shard=1)

# ---- Ray: a local cluster on CPU (skipped when Ray is not installed) ----

@pytest.fixture(scope='module')
def ray_cluster():
    ray = pytest.importorskip('ray')
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # ship this test module's tasks to the workers
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_sharded_equals_unsharded(ray_cluster, tmp_path):
    paths = run_shards(toy_task, HEADS, PROMPTS, tmp_path, 'toy', heads_per_shard=4, prompts_per_shard=4, backend='ray')
    assert all(p.exists() for p in paths)
    pd.testing.assert_frame_equal(merge_shards(tmp_path, 'toy', sort_by=KEYS), unsharded())


def test_ray_killed_worker_shard_reruns_without_loss(ray_cluster, tmp_path):
    task = functools.partial(killing_task, str(tmp_path))
    run_shards(task, HEADS, PROMPTS, tmp_path / 'out', 'toy', heads_per_shard=4, prompts_per_shard=4,
               backend='ray', max_retries=2)
    assert (tmp_path / 'killed-once').exists(), 'the worker was never killed: the test did not test anything'
    merged = merge_shards(tmp_path / 'out', 'toy', sort_by=KEYS)
    pd.testing.assert_frame_equal(merged, unsharded())
    assert not list((tmp_path / 'out').rglob('*.tmp'))


def test_ray_killed_worker_without_retries_fails_loudly(ray_cluster, tmp_path):
    ray = ray_cluster
    task = functools.partial(killing_task, str(tmp_path))
    with pytest.raises(ray.exceptions.RayError):
        run_shards(task, HEADS, PROMPTS, tmp_path / 'out', 'toy', heads_per_shard=4, prompts_per_shard=4,
                   backend='ray', max_retries=0)
    with pytest.raises(MultilingError, match='not written yet'):
        merge_shards(tmp_path / 'out', 'toy', sort_by=KEYS)
    # the next run (retries allowed, or just again) completes the sweep
    run_shards(task, HEADS, PROMPTS, tmp_path / 'out', 'toy', heads_per_shard=4, prompts_per_shard=4, backend='ray')
    pd.testing.assert_frame_equal(merge_shards(tmp_path / 'out', 'toy', sort_by=KEYS), unsharded())


# ---- a model split over devices (accelerate device map), on CPU ----

DEVICE_MAP = {'transformer.wte': 'cpu', 'transformer.wpe': 'cpu', 'transformer.h.0': 'cpu', 'transformer.h.1': 'disk',
              'transformer.ln_f': 'cpu', 'lm_head': 'cpu'}


@pytest.fixture(scope='module')
def saved_tiny(tmp_path_factory):
    from multiling.models import tiny_hf_model
    d = tmp_path_factory.mktemp('tiny-gpt2')
    hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(d); tok.save_pretrained(d)
    return d


def test_device_map_interventions_unchanged(saved_tiny):
    from multiling.models import load_model
    from multiling.interventions import Intervention, UnitForce, ablate_heads, forward, generate
    ref = load_model(saved_tiny, device='cpu')
    split = load_model(saved_tiny, device='cpu', device_map=DEVICE_MAP)
    assert {p.device.type for p in split.hf.parameters()} == {'cpu', 'meta'}, 'layer 1 should be offloaded to disk'
    texts = ['The weather is nice today', 'Le temps', 'Das Wetter ist heute schön und wir']
    for iv in [None, ablate_heads((1, 2)), ablate_heads((0, 0), (1, 3)),
               [ablate_heads((1, 1)), Intervention(), Intervention(units=(UnitForce(1, [3, 5], 2.0),))]]:
        a = forward(ref, texts, iv, save=['heads'])
        b = forward(split, texts, iv, save=['heads'])
        torch.testing.assert_close(b['logits'], a['logits'], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(b['heads'], a['heads'], atol=1e-6, rtol=1e-6)
    assert generate(split, texts, ablate_heads((1, 2)), max_new_tokens=5) == generate(ref, texts, ablate_heads((1, 2)), max_new_tokens=5)


def test_device_map_auto_loads(saved_tiny):
    from multiling.models import load_model
    from multiling.interventions import ablate_heads, forward
    ref = load_model(saved_tiny, device='cpu')
    auto = load_model(saved_tiny, device='cpu', device_map='auto')
    torch.testing.assert_close(forward(auto, ['Hello there'], ablate_heads((0, 1)))['logits'],
                               forward(ref, ['Hello there'], ablate_heads((0, 1)))['logits'])


def test_device_map_offloaded_model_has_a_weights_hash(saved_tiny):
    # provenance records `weights_hash` for every result: a disk-offloaded model must still give one (the same)
    from multiling.models import load_model
    ref = load_model(saved_tiny, device='cpu')
    split = load_model(saved_tiny, device='cpu', device_map=DEVICE_MAP)
    assert split.weights_hash == ref.weights_hash


# ---- the GPU benchmark script, smoke-tested on CPU ----

def test_gpu_benchmark_quick_on_cpu(tmp_path):
    import json, subprocess
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / 'bench' / 'gpu_benchmark.py'),
                        '--device', 'cpu', '--quick', '--out', str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res['device'].startswith('cpu') and len(res['runs']) == 1
    run = res['runs'][0]
    assert run['matmul']['flops_per_s'] > 0
    assert [r['method'] for r in run['methods']] == ['plain', 'fast']
    for r in run['methods']:
        assert r['wall_s'] > 0 and r['tokens'] > 0 and r['unembedded_positions'] > 0 and r['est_flops'] > 0
        assert 0 < r['share_of_matmul_peak'] < 10 and r['speedup_vs_plain'] > 0
        assert r['peak_memory_bytes'] is None          # only measured on a GPU
        assert r['vs_plain']['rows'] == 8 * 2 and r['vs_plain']['identical']   # 8 heads x 2 prompts, as the plain loop


def test_gpu_benchmark_asks_for_a_gpu_it_does_not_have(tmp_path):
    import subprocess
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / 'bench' / 'gpu_benchmark.py'),
                        '--out', str(tmp_path / 'b.json')], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'no CUDA GPU' in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path / 'b.json').exists()


def test_ray_liha_sweep_sharded_equals_unsharded(ray_cluster, saved_tiny, tmp_path):
    from multiling.shard import liha_sweep
    task, heads, prompts, keys = liha_sweep(str(saved_tiny), n_prompts=1, languages='en,fr', max_new_tokens=2)
    full = task(heads, prompts).sort_values(keys, kind='stable').reset_index(drop=True)
    run_shards(task, heads, prompts, tmp_path, 'liha', heads_per_shard=5, prompts_per_shard=1, backend='ray')
    pd.testing.assert_frame_equal(merge_shards(tmp_path, 'liha', sort_by=keys), full)

"""Faults (issue 10): a sweep killed mid-run (SIGKILL) and resumed loses nothing and duplicates nothing; a killed
write never leaves a half-written table where a reader looks; a corrupt checkpoint is a clear error."""
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pandas as pd
import pytest
from multiling.core import MultilingError, load_table, save_table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'PYTHONUNBUFFERED': '1', 'MPLBACKEND': 'Agg'}


def start(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', textwrap.dedent(code), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def wait_for_line(proc: subprocess.Popen, word: str, timeout: float = 60) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if word in line: return line
        if not line and proc.poll() is not None: break
    proc.kill()
    raise AssertionError(f"subprocess never printed {word!r}: {proc.stderr.read()[-3000:]}")


def kill(proc: subprocess.Popen):
    os.kill(proc.pid, signal.SIGKILL); proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# ---------------------------------------------------------------- atomic writes

WRITER = """
    import sys, time, pandas as pd
    from multiling.core import save_table
    out = sys.argv[1]
    real_to_csv = pd.DataFrame.to_csv
    def slow_to_csv(self, path, **kw):
        # write the first half of the table, then stall: the parent kills us mid-write
        real_to_csv(self.iloc[: len(self) // 2], path, **kw)
        print('HALF WRITTEN', flush=True); time.sleep(120)
        real_to_csv(self, path, **kw)
    pd.DataFrame.to_csv = slow_to_csv
    save_table(pd.DataFrame({'x': range(10000), 'y': 2.5}), 'table', out, {'model': 'v2'})
"""


def test_killed_write_leaves_the_old_table_intact(tmp_path):
    old = pd.DataFrame({'x': range(10), 'y': 1.0})
    save_table(old, 'table', tmp_path, {'model': 'v1'})
    before = (tmp_path / 'table.csv').read_bytes()
    proc = start(WRITER, tmp_path)
    wait_for_line(proc, 'HALF WRITTEN')
    kill(proc)
    assert (tmp_path / 'table.csv').read_bytes() == before          # never half of v2
    df = load_table(tmp_path / 'table.csv')
    assert len(df) == 10 and (df['model'] == 'v1').all()


def test_killed_first_write_leaves_no_table(tmp_path):
    proc = start(WRITER, tmp_path)
    wait_for_line(proc, 'HALF WRITTEN')
    kill(proc)
    assert not (tmp_path / 'table.csv').exists()                    # nothing a reader could mistake for a result
    with pytest.raises(MultilingError, match='no table'):
        load_table(tmp_path / 'table.csv')


FULL_DISK_WRITER = r"""
import resource, signal, sys
import pandas as pd
from multiling.core import save_table, MultilingError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)            # past the limit write() fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
try: save_table(pd.DataFrame({'x': range(100_000), 'y': 2.5}), 'table', sys.argv[1], {'model': 'v2'})
except MultilingError as e: print('CLEAR ERROR:', e); sys.exit(3)
"""


def test_full_disk_is_a_clear_error_and_keeps_the_old_table(tmp_path):
    # a real write that the kernel refuses (a file-size limit: EFBIG, handled like ENOSPC / EDQUOT)
    save_table(pd.DataFrame({'x': range(10), 'y': 1.0}), 'table', tmp_path, {'model': 'v1'})
    before = (tmp_path / 'table.csv').read_bytes()
    r = subprocess.run([sys.executable, '-c', FULL_DISK_WRITER, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    assert 'CLEAR ERROR' in r.stdout and 'table.csv' in r.stdout and 'full' in r.stdout, r.stdout
    assert (tmp_path / 'table.csv').read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


# ---------------------------------------------------------------- corrupt checkpoints

def test_corrupt_training_checkpoint_is_a_clear_error(tmp_path):
    # a checkpoint.pt cut short (a disk that filled up, a copy that broke) must not be a pickle traceback
    # nor a silent restart from step 0: a MultilingError that names the file and says what to do
    from multiling.organisms import train_organism
    out = tmp_path / 'organism'; out.mkdir()
    (out / 'checkpoint.pt').write_bytes(b'PK\x03\x04' + os.urandom(4000))
    with pytest.raises(MultilingError) as ei:
        train_organism('balanced', 'tiny', out, steps=12, checkpoint_every=4)
    assert 'checkpoint.pt' in str(ei.value), ei.value
    assert not (out / 'organism.json').exists()


def test_corrupt_model_weights_are_a_clear_error(tmp_path):
    from multiling.models import load_model, tiny_hf_model
    hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    st = tmp_path / 'model.safetensors'; st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(MultilingError, match='model.safetensors|could not load'):
        load_model(tmp_path, device='cpu')


# ---------------------------------------------------------------- SIGKILL mid-run, then resume: organism training

def train_cmd(out, steps=8):
    return [str(BIN / 'multiling_train'), '--mixture', 'balanced', '--size', 'tiny', '--steps', str(steps),
            '--checkpoint-every', '2', '--out', str(out)]


def test_training_killed_mid_run_resumes_to_the_same_model(tmp_path):
    # the uninterrupted reference and the run to be killed start together (two cores)
    ref = subprocess.Popen(train_cmd(tmp_path / 'ref'), env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train_cmd(tmp_path / 'victim'), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / 'victim' / 'checkpoint.pt'
    t0 = time.time()
    while not ckpt.exists() and victim.poll() is None and time.time() - t0 < 240: time.sleep(0.05)
    assert ckpt.exists(), 'the training never wrote a checkpoint'
    time.sleep(0.5)                                      # a little past the checkpoint: work that will be lost
    kill(victim)
    assert not (tmp_path / 'victim' / 'organism.json').exists()
    import torch
    step = torch.load(ckpt, map_location='cpu', weights_only=False)['step']
    assert 0 < step < 8
    resumed = subprocess.run(train_cmd(tmp_path / 'victim'), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'resuming victim from step' in resumed.stderr
    _, err = ref.communicate(timeout=300); assert ref.returncode == 0, err[-3000:]
    from safetensors.torch import load_file
    a, b = load_file(tmp_path / 'ref' / 'model.safetensors'), load_file(tmp_path / 'victim' / 'model.safetensors')
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), f'{k} differs after kill + resume'
    assert not ckpt.exists()                             # a finished run leaves no checkpoint behind


# ---------------------------------------------------------------- SIGKILL mid-run, then resume: the sharded LIHA sweep

SWEEP = """
    import sys
    from multiling.shard import liha_sweep, run_shards, merge_shards
    from multiling.core import save_table
    out, spec = sys.argv[1], sys.argv[2]
    task, heads, prompts, keys = liha_sweep(spec, languages='en,fr', n_prompts=2, max_new_tokens=3)
    print('START', flush=True)
    run_shards(task, heads, prompts, out, 'liha', heads_per_shard=1, prompts_per_shard=2)
    save_table(merge_shards(out, 'liha', sort_by=keys), 'liha_pairs', out, {'model': spec})
    print('DONE', flush=True)
"""


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    from multiling.models import tiny_hf_model
    d = tmp_path_factory.mktemp('models') / 'tiny-gpt2'
    hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(d); tok.save_pretrained(d)
    return d


def test_sharded_sweep_killed_mid_run_resumes_without_loss_or_duplicates(tiny_dir, tmp_path):
    ref = start(SWEEP, tmp_path / 'ref', tiny_dir)           # uninterrupted, alongside
    victim = start(SWEEP, tmp_path / 'victim', tiny_dir)
    wait_for_line(victim, 'START', timeout=120)
    shards = tmp_path / 'victim' / 'liha.shards'
    t0 = time.time()
    while len(list(shards.glob('*.parquet'))) < 3 and victim.poll() is None and time.time() - t0 < 120: time.sleep(0.02)
    kill(victim)
    done_before = len(list(shards.glob('*.parquet')))
    assert 3 <= done_before < 16, f'killed too late to test anything ({done_before} of 16 shards done)'
    assert not (tmp_path / 'victim' / 'liha_pairs.csv').exists()
    resumed = start(SWEEP, tmp_path / 'victim', tiny_dir)
    wait_for_line(resumed, 'DONE', timeout=240); resumed.wait(timeout=60)
    wait_for_line(ref, 'DONE', timeout=240); ref.wait(timeout=60)
    a = load_table(tmp_path / 'ref' / 'liha_pairs.csv'); b = load_table(tmp_path / 'victim' / 'liha_pairs.csv')
    pd.testing.assert_frame_equal(a, b)
    assert not b.duplicated(['layer', 'head', 'prompt_id', 'lang']).any()
    assert len(b) == (2 * 4) * 4                            # 8 heads x 2 prompts x 2 languages

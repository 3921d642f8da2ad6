"""Organism training precision: bf16 autocast (the `small` default) next to fp32 (the `tiny` default), recorded,
checked on reuse with the rest of the size's settings, and resumes exactly like fp32."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch
from multiling.core import MultilingError, tensor_hash
from multiling.models import load_model
from multiling.organisms import train_organism, train_instruct

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}


def weights(path) -> str:
    return tensor_hash(dict(load_model(path).hf.named_parameters()))


@pytest.fixture(scope='module')
def fp32_and_bf16(tmp_path_factory):
    root = tmp_path_factory.mktemp('precision')
    fp32 = train_organism('balanced', 'tiny', root / 'fp32', steps=8, checkpoint_every=4)
    bf16 = train_organism('balanced', 'tiny', root / 'bf16', steps=8, checkpoint_every=4, precision='bf16')
    return root, fp32, bf16


def test_bf16_is_recorded_and_trains_other_weights(fp32_and_bf16):
    root, fp32, bf16 = fp32_and_bf16
    assert json.loads((fp32 / 'organism.json').read_text())['precision'] == 'fp32'
    meta = json.loads((bf16 / 'organism.json').read_text())
    assert meta['precision'] == 'bf16' and meta['provenance']['params']['precision'] == 'bf16'
    assert weights(fp32) != weights(bf16)            # autocast changes the arithmetic
    assert load_model(bf16).hf.dtype == torch.float32   # the weights themselves stay fp32


def test_bf16_resume_is_exact(fp32_and_bf16):
    root, _, bf16 = fp32_and_bf16
    part = train_organism('balanced', 'tiny', root / 'bf16-resumed', steps=8, checkpoint_every=4, precision='bf16', stop_after=5)
    assert not (part / 'organism.json').exists()
    train_organism('balanced', 'tiny', part, steps=8, checkpoint_every=4, precision='bf16')
    assert weights(part) == weights(bf16)


def test_reuse_checks_precision(fp32_and_bf16):
    root, fp32, bf16 = fp32_and_bf16
    assert train_organism('balanced', 'tiny', bf16, steps=8, precision='bf16') == bf16      # reused, not retrained
    with pytest.raises(MultilingError, match='made differently.*precision'):
        train_organism('balanced', 'tiny', bf16, steps=8)                                   # asks fp32
    # an organism.json written before `precision` existed is read as fp32
    meta = json.loads((fp32 / 'organism.json').read_text()); meta.pop('precision'); meta['settings'].pop('precision')
    (fp32 / 'organism.json').write_text(json.dumps(meta))
    assert train_organism('balanced', 'tiny', fp32, steps=8) == fp32
    with pytest.raises(MultilingError, match='made differently.*precision'):
        train_organism('balanced', 'tiny', fp32, steps=8, precision='bf16')


def test_reuse_checks_the_size_settings(fp32_and_bf16, tmp_path):
    root, fp32, _ = fp32_and_bf16
    old = shutil.copytree(fp32, tmp_path / 'old')     # as if made when `tiny` had another vocabulary
    meta = json.loads((old / 'organism.json').read_text()); meta['settings']['vocab_size'] = 8192
    (old / 'organism.json').write_text(json.dumps(meta))
    with pytest.raises(MultilingError, match=r"made differently \(\{'settings\.vocab_size': \(8192, 2048\)\}"):
        train_organism('balanced', 'tiny', old, steps=8)
    assert json.loads((old / 'organism.json').read_text())['settings']['vocab_size'] == 8192   # left as it was


def test_instruct_inherits_the_base_precision(fp32_and_bf16):
    root, _, bf16 = fp32_and_bf16
    out = train_instruct(bf16, root / 'bf16-instruct', steps=2)
    assert json.loads((out / 'organism.json').read_text())['precision'] == 'bf16'


def test_unknown_precision_is_a_clear_error(tmp_path):
    with pytest.raises(MultilingError, match="unknown precision 'fp16'.*fp32, bf16"):
        train_organism('balanced', 'tiny', tmp_path / 'x', steps=2, precision='fp16')
    assert not (tmp_path / 'x').exists()
    r = subprocess.run([str(Path(sys.executable).parent / 'multiling_train'), '--size', 'tiny', '--precision', 'fp16',
                        '--out', str(tmp_path / 'y')], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'fp16'" in r.stderr and not (tmp_path / 'y').exists()

"""Bad input gives a clear error that names the problem, and writes nothing (issue 10).

Each case asserts a `MultilingError` (or, for a console script, a non-zero exit with a one-line message and no
traceback) whose message names the problem, and that the output folder (`tmp_path`) holds no new file afterwards.
"""
import os, subprocess, sys
from pathlib import Path
import pytest
import torch
from multiling.core import MultilingError, check_param, parse_languages
from multiling.models import load_model, resolve_device, resolve_dtype, tiny_hf_model, tiny_model
from multiling.interventions import Intervention, Steer, UnitForce, ablate_heads, forward, generate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OFFLINE_ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob('*')) if Path(path).exists() else []


@pytest.fixture
def out(tmp_path):
    "An output folder that must stay empty."
    d = tmp_path / 'out'; d.mkdir()
    yield d
    assert files_under(d) == [], f"bad input wrote files: {files_under(d)}"


def raises(fn, *words):
    "Call fn, expect a MultilingError whose message contains every one of `words` (case-insensitive)."
    with pytest.raises(MultilingError) as ei: fn()
    msg = str(ei.value)
    for w in words: assert w.lower() in msg.lower(), f"message lacks {w!r}: {msg}"
    return msg


def cli(name, *args, cwd=None):
    "Run a console script; return (returncode, stdout, stderr)."
    exe = BIN / name
    if not exe.exists(): pytest.fail(f"console script {name} is not installed (pip install -e .)")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=OFFLINE_ENV, cwd=cwd or ROOT, timeout=120)
    return r.returncode, r.stdout, r.stderr


def assert_clean_cli_error(rc, stdout, stderr, *words):
    assert rc != 0, f"exit status 0 for bad input\n{stdout}\n{stderr}"
    assert 'Traceback' not in stderr, f"a traceback instead of a clear message:\n{stderr[-2000:]}"
    for w in words: assert w.lower() in (stdout + stderr).lower(), f"message lacks {w!r}:\n{stderr[-2000:]}"


@pytest.fixture(scope='module')
def tiny():
    return tiny_model('gpt2')


@pytest.fixture(scope='module')
def saved_tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp('tiny-gpt2')
    hf, tok = tiny_hf_model('gpt2'); hf.save_pretrained(d); tok.save_pretrained(d)
    return d


# ---------------------------------------------------------------- models

def test_unknown_model_spec(out, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)   # read at import: the env var alone is too late
    raises(lambda: load_model('no-such-model-xyz', device='cpu', models_dir=out), "'no-such-model-xyz'", 'offline names')


def test_organism_not_built(out):
    raises(lambda: load_model('organism-balanced-tiny', device='cpu', models_dir=out), 'not built yet', 'multiling_train')


def test_folder_that_is_not_a_model(out, tmp_path):
    (tmp_path / 'notamodel').mkdir(); (tmp_path / 'notamodel' / 'README').write_text('hello')
    raises(lambda: load_model(tmp_path / 'notamodel', device='cpu'), 'config.json')


def test_corrupt_checkpoint_truncated(out, saved_tiny, tmp_path):
    import shutil
    bad = tmp_path / 'corrupt'; shutil.copytree(saved_tiny, bad)
    st = bad / 'model.safetensors'; st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    raises(lambda: load_model(bad, device='cpu'), str(bad))


def test_corrupt_checkpoint_garbage(out, saved_tiny, tmp_path):
    import shutil
    bad = tmp_path / 'garbage'; shutil.copytree(saved_tiny, bad)
    st = bad / 'model.safetensors'; st.write_bytes(os.urandom(st.stat().st_size))
    raises(lambda: load_model(bad, device='cpu'), str(bad))


def test_unknown_dtype(out, saved_tiny):
    raises(lambda: load_model(saved_tiny, device='cpu', dtype='float8'), "'float8'", 'bfloat16')
    raises(lambda: resolve_dtype('half-ish'), 'unknown dtype')


def test_unknown_device(out, saved_tiny):
    raises(lambda: load_model(saved_tiny, device='tpu'), "'tpu'", 'cpu')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without a GPU')
def test_cuda_without_gpu(out):
    raises(lambda: resolve_device('cuda:0'), 'no CUDA GPU', "device='cpu'")


# ---------------------------------------------------------------- languages and parameters

def test_unknown_language_code(out):
    raises(lambda: parse_languages('en,xx,fr'), "'xx'", 'supported')


def test_no_language(out):
    raises(lambda: parse_languages(' , '), 'no language')


def test_duplicate_language(out):
    raises(lambda: parse_languages('en,fr,en'), 'duplicate')


@pytest.mark.parametrize('value', ['ten', '', '3.5', None, [1]])
def test_non_numeric_papermill_parameter(out, value):
    raises(lambda: check_param('n_prompts', value, int, 1), 'n_prompts')


@pytest.mark.parametrize('value', ['nan', float('nan'), 'inf'])
def test_non_finite_papermill_parameter(out, value):
    # papermill passes `-p temperature nan` as the string 'nan'; float('nan') passes every range check silently
    raises(lambda: check_param('temperature', value, float, 0, 2), 'temperature')


def test_parameter_out_of_range(out):
    raises(lambda: check_param('n_prompts', -3, int, 1), 'n_prompts', '>= 1')


def test_non_boolean_parameter(out):
    raises(lambda: check_param('fast', 'maybe', bool), 'fast', 'true or false')


# ---------------------------------------------------------------- prompts and interventions

def test_empty_prompt_in_encode(out, tiny):
    raises(lambda: tiny.encode(['A fine prompt', '   ']), 'prompt 1', 'empty')


def test_no_prompts(out, tiny):
    raises(lambda: tiny.encode([]), 'no prompts')


def test_layer_out_of_range(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], ablate_heads((2, 0))), 'layer 2', 'out of range', '0..1')


def test_head_out_of_range(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], ablate_heads((0, 4))), 'head 4', 'out of range', '0..3')


def test_negative_head(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], ablate_heads((1, -1))), 'head -1', 'out of range')


def test_unit_index_out_of_range(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], Intervention(units=(UnitForce(1, [3, 128], 0.0),))), 'unit index', '0..127')


def test_unit_site_unknown(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], Intervention(units=(UnitForce(0, [0], 0.0, site='attn.nope'),))), "'attn.nope'")


def test_steering_vector_wrong_size(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], Intervention(steer=(Steer(0, torch.zeros(7)),))), 'size 7', '32')


def test_interventions_count_mismatch(out, tiny):
    raises(lambda: forward(tiny, ['a b', 'c d'], [Intervention()] * 3), '3 interventions', '2 prompts')


def test_unknown_activation_name(out, tiny):
    raises(lambda: forward(tiny, ['Hello there'], save=['residual']), "'residual'", 'resid')


def test_max_new_tokens_zero(out, tiny):
    raises(lambda: generate(tiny, ['Hello there'], max_new_tokens=0), 'max_new_tokens')


# ---------------------------------------------------------------- prompt files (multiling.data)

def write_prompts(path: Path, text: str) -> Path:
    path.write_text(text, encoding='utf-8'); return path


def test_prompts_missing_language_column(out, tmp_path):
    from multiling.data import load_prompts
    f = write_prompts(tmp_path / 'p.csv', 'id,en,fr\n1,Hello,Bonjour\n2,Good day,Bonne journée\n')
    raises(lambda: load_prompts(f, languages='en,de'), 'de', 'column')


def test_prompts_unknown_language(out, tmp_path):
    from multiling.data import load_prompts
    f = write_prompts(tmp_path / 'p.csv', 'id,en,fr\n1,Hello,Bonjour\n')
    raises(lambda: load_prompts(f, languages='en,klingon'), 'klingon')


def test_prompts_misaligned_row(out, tmp_path):
    from multiling.data import load_prompts
    # an unquoted comma shifts the French prompt of line 3 into a column of its own
    f = write_prompts(tmp_path / 'p.csv', 'id,en,fr\n1,Hello,Bonjour\n2,Well, then,Eh bien\n')
    raises(lambda: load_prompts(f), 'line 3', 'fields')


def test_prompts_short_row(out, tmp_path):
    from multiling.data import load_prompts
    f = write_prompts(tmp_path / 'p.csv', 'id,en,fr\n1,Hello,Bonjour\n2,Good day\n')
    raises(lambda: load_prompts(f), 'line 3')


def test_prompts_duplicate_rows(out, tmp_path):
    from multiling.data import load_prompts
    f = write_prompts(tmp_path / 'p.csv', 'id,en,fr\n1,Hello,Bonjour\n1,Hello,Bonjour\n')
    raises(lambda: load_prompts(f), 'duplicate', '1')


def test_prompts_empty_prompt(out, tmp_path):
    from multiling.data import load_prompts
    f = write_prompts(tmp_path / 'p.csv', 'id,en,fr\n1,Hello,Bonjour\n2,Good day,   \n')
    raises(lambda: load_prompts(f), 'empty', 'fr', '2')


def test_prompts_file_missing(out, tmp_path):
    from multiling.data import load_prompts
    raises(lambda: load_prompts(tmp_path / 'nope.csv'), 'nope.csv', 'not found')


def test_prompts_not_utf8(out, tmp_path):
    from multiling.data import load_prompts
    f = tmp_path / 'p.csv'; f.write_bytes('id,en,fr\n1,Hello,Bient\xf4t\n'.encode('latin-1'))
    raises(lambda: load_prompts(f), 'UTF-8')


def test_multiling_data_unknown_language(out):
    rc, so, se = cli('multiling_data', 'build', '--languages', 'en,xx', '--out-dir', out)
    assert_clean_cli_error(rc, so, se, 'xx')


def test_multiling_data_no_command(out):
    rc, so, se = cli('multiling_data')
    assert_clean_cli_error(rc, so, se, 'usage')


# ---------------------------------------------------------------- organisms (multiling.organisms, multiling_train)

def test_unknown_mixture(out):
    from multiling.organisms import check_mixture
    raises(lambda: check_mixture('klingon'), "'klingon'", 'balanced')


def test_unknown_size(out):
    from multiling.organisms import check_size
    raises(lambda: check_size('huge'), "'huge'", 'tiny')


def test_multiling_train_unknown_mixture(out):
    rc, so, se = cli('multiling_train', '--mixture', 'klingon', '--size', 'tiny', '--out', out / 'organism')
    assert_clean_cli_error(rc, so, se, 'klingon', 'mixture')


def test_multiling_train_unknown_size(out):
    rc, so, se = cli('multiling_train', '--mixture', 'balanced', '--size', 'huge', '--out', out / 'organism')
    assert_clean_cli_error(rc, so, se, 'huge', 'size')


def test_multiling_train_non_numeric_steps(out):
    rc, so, se = cli('multiling_train', '--size', 'tiny', '--steps', 'many', '--out', out / 'organism')
    assert_clean_cli_error(rc, so, se, '--steps', 'many')


def test_multiling_train_instruct_from_nothing(out, tmp_path):
    rc, so, se = cli('multiling_train', '--instruct-from', tmp_path / 'no-base', '--out', out / 'organism-instruct')
    assert_clean_cli_error(rc, so, se, 'no-base')


# ---------------------------------------------------------------- language detector (multiling.langid)

def test_detector_unsupported_language(out):
    from multiling.langid import LanguageDetector
    raises(lambda: LanguageDetector(['en', 'sw']), "'sw'", 'supported')


def test_detect_language_unsupported_language(out):
    from multiling.langid import detect_language
    raises(lambda: detect_language(['Hello there'], 'en,tlh'), "'tlh'")


def test_detector_given_non_text(out):
    from multiling.langid import LanguageDetector
    raises(lambda: LanguageDetector(['en', 'fr']).detect(None), 'text', 'NoneType')


def test_detector_given_a_string_as_batch(out):
    from multiling.langid import LanguageDetector
    raises(lambda: LanguageDetector(['en', 'fr']).detect_batch('Hello there'), 'list')

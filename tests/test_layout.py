"The project's layout promises: every experiment notebook is parameterised for papermill and has a CI setting."
import configparser, json
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / 'nbs').glob('2[0-9]_*.ipynb'))
REQUIRED = {'model', 'languages', 'out_dir', 'fig_dir', 'device', 'dtype', 'seed'}


def parameters_cell(nb_path):
    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(cells) == 1, f"{nb_path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}"
    ns = {}
    exec(''.join(cells[0]['source']), ns)  # the parameters cell holds plain assignments
    return {k for k in ns if not k.startswith('__')}


def test_there_are_seven_studies():
    assert len(EXPERIMENTS) >= 7, [p.name for p in EXPERIMENTS]


@pytest.mark.parametrize('nb', EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_is_parameterised(nb):
    names = parameters_cell(nb)
    missing = REQUIRED - names - ({'model'} if {'base_model', 'instruct_model'} <= names or 'models' in names else set())
    assert not missing, f"{nb.name} lacks parameters {sorted(missing)}"


@pytest.mark.parametrize('nb', EXPERIMENTS + [ROOT / 'nbs' / '07_organisms.ipynb'], ids=lambda p: p.stem)
def test_ci_setting_exists_and_names_real_parameters(nb):
    ci = ROOT / 'nbs' / 'ci_params' / f'{nb.stem}.yaml'
    assert ci.exists(), f"no CI setting {ci.relative_to(ROOT)}"
    params = yaml.safe_load(ci.read_text()) or {}
    unknown = set(params) - parameters_cell(nb)
    assert not unknown, f"{ci.name} sets parameters the notebook does not declare: {sorted(unknown)}"
    for key in ('out_dir', 'fig_dir'):
        if key in parameters_cell(nb):
            assert 'scratch' in str(params.get(key, '')), f"{ci.name}: CI must write {key} to a scratch folder"


def test_nbdev_keeps_the_parameters_tag():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    assert 'tags' in cfg['DEFAULT']['allowed_cell_metadata_keys'].split()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / 'README.md').read_text()
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'make test' in readme and 'make test' in ci and 'make paper' in readme


@pytest.mark.parametrize('nb', EXPERIMENTS + [ROOT / 'nbs' / '07_organisms.ipynb'], ids=lambda p: p.stem)
def test_every_figure_is_saved_with_provenance(nb):
    # figures/index.md is built from the provenance that save_figure records: a call without `prov` leaves a figure
    # nobody can trace (and the index check fails only after a full run has committed it)
    import re
    src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
    calls = re.findall(r'save_figure\(([^\n]*)', src)
    bare = [c for c in calls if 'prov' not in c]
    assert not bare, f"{nb.name}: save_figure without prov: {bare}"

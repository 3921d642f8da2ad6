"""The project's layout promises: every experiment notebook is parameterised for papermill and has a CI setting; make paper
honours SIZE and writes a smoke run only to scratch; the executed notebooks keep their outputs."""
import configparser, json, re, shlex, subprocess
from pathlib import Path
import pytest
import yaml
from multiling.core import notebook_defaults

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / 'nbs').glob('2[0-9]_*.ipynb'))
REQUIRED = {'model', 'languages', 'out_dir', 'fig_dir', 'device', 'dtype', 'seed'}
ORGANISMS = ROOT / 'nbs' / '27_organism_quality.ipynb'   # the organism notebook (07_organisms is its library chapter)
CLAIMS = ROOT / 'nbs' / '30_claims.ipynb'


def parameters_cell(nb_path):
    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(cells) == 1, f"{nb_path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}"
    return set(notebook_defaults(nb_path))  # plain `name = literal` assignments, or a MultilingError naming the line


def test_there_are_seven_studies():
    assert len(EXPERIMENTS) >= 7, [p.name for p in EXPERIMENTS]


@pytest.mark.parametrize('nb', EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_is_parameterised(nb):
    names = parameters_cell(nb)
    exempt = set()
    if {'base_model', 'instruct_model'} <= names or 'models' in names: exempt = {'model'}
    if nb == ORGANISMS: exempt = {'model', 'dtype'}   # organisms are named by size and mixture, evaluated in float32
    missing = REQUIRED - names - exempt
    assert not missing, f"{nb.name} lacks parameters {sorted(missing)}"


@pytest.mark.parametrize('nb', sorted(set(EXPERIMENTS) | {ORGANISMS, CLAIMS}), ids=lambda p: p.stem)
def test_ci_setting_exists_and_names_real_parameters(nb):
    ci = ROOT / 'nbs' / 'ci_params' / f'{nb.stem}.yaml'
    assert ci.exists(), f"no CI setting {ci.relative_to(ROOT)}"
    params = yaml.safe_load(ci.read_text()) or {}
    unknown = set(params) - parameters_cell(nb)
    assert not unknown, f"{ci.name} sets parameters the notebook does not declare: {sorted(unknown)}"
    for key in ('out_dir', 'fig_dir'):
        if key in parameters_cell(nb):
            assert 'scratch' in str(params.get(key, '')), f"{ci.name}: CI must write {key} to a scratch folder"


def test_claims_notebook_reads_results_and_writes_where_told():
    names = parameters_cell(CLAIMS)
    assert {'model', 'organism', 'results_dir', 'out_dir', 'fig_dir', 'seed'} <= names


def test_nbdev_keeps_the_parameters_tag_and_the_outputs():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    assert 'tags' in cfg['DEFAULT']['allowed_cell_metadata_keys'].split()
    # the executed experiment notebooks are committed with their outputs: nbdev_clean must not clear them
    assert cfg['DEFAULT']['clear_all'].strip().lower() == 'false'


def test_readme_commands_are_what_make_and_ci_run():
    readme = (ROOT / 'README.md').read_text()
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'make test' in readme and 'make test' in ci and 'make paper' in readme
    assert 'nbs/30_claims.ipynb' in readme and 'SIZE=tiny' in readme


@pytest.mark.parametrize('nb', EXPERIMENTS + [ORGANISMS, CLAIMS], ids=lambda p: p.stem)
def test_every_figure_is_saved_with_provenance(nb):
    # figures/index.md is built from the provenance that save_figure records: a call without `prov` leaves a figure
    # nobody can trace (and the index check fails only after a full run has committed it)
    src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
    calls = re.findall(r'save_figure\(([^\n]*)', src)
    bare = [c for c in calls if 'prov' not in c]
    assert not bare, f"{nb.name}: save_figure without prov: {bare}"


def _paper_runs(*make_args):
    "The `paper_cli run` commands `make paper` would execute with every target out of date (-B), as argument lists."
    out = subprocess.run(['make', '-n', '-B', 'paper', *make_args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    runs = [shlex.split(line) for line in out.stdout.splitlines() if 'paper_cli' in line and "' run " in line]
    return [args[args.index('run') + 1:] for args in runs], out.stdout


def _option(args, name):
    return [args[i + 1] for i, a in enumerate(args) if a == name]


def test_make_paper_smoke_run_writes_only_to_scratch():
    runs, text = _paper_runs('SIZE=tiny')
    names = [_option(r, '--name')[0] for r in runs]
    assert names[0] == ORGANISMS.stem and names[-1] == '30_claims'
    assert {p.stem for p in EXPERIMENTS} - {ORGANISMS.stem} <= set(names)
    for r in runs:
        assert '--smoke' in r and '--write-back' not in r, r
        assert _option(r, '--out-dir')[0].startswith('data/scratch/') and _option(r, '--fig-dir')[0].startswith('figures/scratch/')
        assert _option(r, '--runs-dir')[0].startswith('data/scratch/')
        assert _option(r, '--size') == ['tiny']
    assert '--size tiny' in text and 'multiling_train --mixture $mix --size tiny' in text
    assert 'multiling_index --fig-dir figures/scratch/' in text


def test_make_paper_writes_the_default_runs_back():
    runs, text = _paper_runs()
    for r in runs:
        assert '--write-back' in r and not _option(r, '--out-dir') and _option(r, '--runs-dir') == ['data/runs'], r
        assert _option(r, '--minutes')[0] != '?', f"no expected minutes for {_option(r, '--name')} in the Makefile"
    assert 'multiling_index --fig-dir figures' in text

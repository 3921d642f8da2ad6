"""Every committed result can be traced and re-made (issues 10 and 16).

The committed files under data/results/ and figures/ are checked one by one: complete provenance (notebook, model,
weights hash, parameters, re-make command), every parameter of its notebook recorded, and within one model name one
weights hash (the current one: that of the model's most recent record). Files that fail today are listed below, each
list with its reason, and their cases are `xfail(strict=True)`: re-running their notebook (make paper) turns a case
into an unexpected pass, which fails this test until the file is taken off its list. Nothing may be added to a list
without a reason; nothing on a list may be missing from the repository.
"""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from multiling.core import FIGURES_DIR, REPO_ROOT
from multiling.provenance import (check_figure_index, committed_figures, committed_records, current_weights,
                                  figure_records, missing_parameters, paper_cli, provenance_problems, render_index,
                                  stale_weights, weights_by_model)


# weights that no longer exist (a model re-trained after the run): none since the default runs of 2026-11-30
STALE_WEIGHTS = {}

# sidecars without a notebook, a weights hash or a re-make command
NO_PROVENANCE = {
    'data/results/langid_accuracy.meta.json':
        "the library chapter 03_langid wrote it: no weights hash of the detector, no parameters cell to re-run",
}

# parameters of the notebook (its parameters cell now) that the sidecar does not record: none since the default runs
MISSING_PARAMETERS = {}

# model names whose committed records carry more than one weights hash (the stale files above)
MODELS_WITH_STALE_RESULTS = {}

# sidecars whose commit ends in +dirty: the code that made them is in no commit. Made by default runs of 2026-11-30
# from uncommitted changes; each leaves this list when the one re-run of the default runs re-makes it from a commit
DIRTY_REASON = "made from uncommitted code (commit +dirty); re-made by the re-run of the default runs"
DIRTY_COMMIT = {path: DIRTY_REASON for path in [
    'data/results/neurons_gemma-3-270m.json',
    'data/results/clt_mixture_selectivity.meta.json',
    'data/results/langid_accuracy.meta.json',
    'data/results/liha_base_vs_instruct.meta.json',
    'data/results/liha_base_vs_instruct_mass.meta.json',
    'data/results/liha_base_vs_instruct_summary.meta.json',
    'data/results/neurons_ap_distribution_gemma-3-270m.meta.json',
    'data/results/neurons_ap_summary_gemma-3-270m.meta.json',
    'data/results/neurons_ap_vs_lape_gemma-3-270m.meta.json',
    'data/results/neurons_first_last_gemma-3-270m.meta.json',
    'data/results/neurons_layers_gemma-3-270m.meta.json',
    'data/results/neurons_overlap_gemma-3-270m.meta.json',
    'data/results/neurons_sites_gemma-3-270m.meta.json',
    'data/results/neurons_tampering_by_language_gemma-3-270m.meta.json',
    'data/results/neurons_tampering_gemma-3-270m.meta.json',
    'data/results/neurons_tampering_generations_gemma-3-270m.meta.json',
    'data/results/neurons_tampering_tests_gemma-3-270m.meta.json',
    'data/results/neurons_timing_gemma-3-270m.meta.json',
    'data/results/organisms_fidelity.meta.json',
    'data/results/organisms_instructions.meta.json',
    'data/results/organisms_perplexity.meta.json',
    'data/results/organisms_training.meta.json',
    'data/results/retrieval_by_layer_language.meta.json',
    'data/results/retrieval_head_scores_runs.meta.json',
    'data/results/retrieval_heads.meta.json',
    'data/results/retrieval_masking.meta.json',
    'data/results/retrieval_masking_contrast.meta.json',
    'data/results/retrieval_masking_runs.meta.json',
    'data/results/retrieval_needle_answers.meta.json',
    'data/results/retrieval_sharing.meta.json',
    'data/results/retrieval_transition_overlap.meta.json',
    'data/results/retrieval_vs_transition_by_layer.meta.json',
    'figures/clt_mixture_selectivity.meta.json',
    'figures/liha_base_vs_instruct.meta.json',
    'figures/liha_base_vs_instruct_mass.meta.json',
    'figures/neurons_ap_vs_lape_gemma-3-270m.meta.json',
    'figures/neurons_layers_gemma-3-270m.meta.json',
    'figures/neurons_overlap_gemma-3-270m.meta.json',
    'figures/neurons_tampering_gemma-3-270m.meta.json',
    'figures/organisms_quality.meta.json',
    'figures/retrieval_by_layer_language.meta.json',
    'figures/retrieval_heads.meta.json',
    'figures/retrieval_masking.meta.json',
    'figures/retrieval_vs_transition_by_layer.meta.json',
]}

RECORDS = committed_records(REPO_ROOT)
RESULTS = [r for r in RECORDS if r['kind'] != 'other']
CURRENT = current_weights(RECORDS)


def _cases(records, known):
    "One case per record, `xfail(strict=True)` with its reason when it is on the `known` list."
    return [pytest.param(r, id=r['path'], marks=pytest.mark.xfail(strict=True, reason=known[r['path']]))
            if r['path'] in known else pytest.param(r, id=r['path']) for r in records]


@pytest.mark.parametrize('rec', _cases(RESULTS, NO_PROVENANCE))
def test_result_has_provenance(rec):
    # notebook, model, a weights hash per model, parameters and the papermill command that re-makes it
    assert provenance_problems(rec) == []


@pytest.mark.parametrize('rec', _cases(RESULTS, MISSING_PARAMETERS))
def test_result_records_every_parameter(rec):
    assert missing_parameters(rec) == []


@pytest.mark.parametrize('rec', _cases(RECORDS, STALE_WEIGHTS))
def test_result_is_on_current_weights(rec):
    assert stale_weights(rec, CURRENT) == []


@pytest.mark.parametrize('model', [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=MODELS_WITH_STALE_RESULTS[m]))
                                   if m in MODELS_WITH_STALE_RESULTS else m for m in sorted(CURRENT)])
def test_one_weights_hash_per_model(model):
    hashes = {}
    for rec in RECORDS:
        if model in weights_by_model(rec): hashes.setdefault(weights_by_model(rec)[model], []).append(rec['path'])
    assert len(hashes) == 1, {h: paths[:3] for h, paths in hashes.items()}


def _commit(rec): return json.loads((REPO_ROOT / rec['path']).read_text()).get('commit')

# every record that names a commit (sidecars and the neuron sets; sweep keys name none)
WITH_COMMIT = [r for r in RECORDS if _commit(r) is not None]


@pytest.mark.parametrize('rec', _cases(WITH_COMMIT, DIRTY_COMMIT))
def test_result_names_a_clean_commit(rec):
    # a committed result must name the commit whose code made it
    assert not str(_commit(rec)).endswith('+dirty'), _commit(rec)


def test_known_failures_are_committed_files():
    # a list entry whose file is gone (deleted, renamed) must leave its list
    paths = {r['path'] for r in RECORDS}
    listed = set(STALE_WEIGHTS) | set(NO_PROVENANCE) | set(MISSING_PARAMETERS) | set(DIRTY_COMMIT)
    assert not listed - paths, sorted(listed - paths)
    assert set(MODELS_WITH_STALE_RESULTS) <= set(CURRENT)


def test_every_committed_figure_is_indexed():
    # raises MultilingError naming each committed figure without a sidecar or an index entry
    check_figure_index(FIGURES_DIR)


def test_figure_index_is_up_to_date():
    assert (FIGURES_DIR / 'index.md').read_text(encoding='utf-8') == render_index(figure_records(FIGURES_DIR))


def test_index_cli_check_runs_clean():
    r = subprocess.run([sys.executable, '-c', 'from multiling.provenance import index_cli; index_cli()', '--check'],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr
    assert f'{len(committed_figures(FIGURES_DIR))} committed figure' in r.stdout


def _notebook(folder, body):
    "A two-cell notebook: a parameters cell (`greeting`, `n`), then `body`."
    cells = [dict(cell_type='code', metadata={'tags': ['parameters']}, source="greeting = 'hello'\nn = 1\n", outputs=[],
                  execution_count=None, id='aaaa0001'),
             dict(cell_type='code', metadata={}, source=body, outputs=[], execution_count=None, id='aaaa0002')]
    nb = dict(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}},
              nbformat=4, nbformat_minor=5)
    path = Path(folder) / '20_demo.ipynb'
    path.write_text(json.dumps(nb))
    return path


def test_paper_run_writes_the_default_run_back_with_its_outputs(tmp_path, capsys):
    nb = _notebook(tmp_path, 'print(greeting * n)')
    args = ['--runs-dir', str(tmp_path / 'runs'), '--write-back', '--name', '20_demo', '--notebook', str(nb), '--minutes', '1']
    paper_cli(['signatures', *args])
    paper_cli(['run', *args])
    out = capsys.readouterr().out
    assert 'expected ~1 min' in out and 'written back' in out
    cells = json.loads(nb.read_text())['cells']
    assert cells[1]['outputs'][0]['text'] == ['hello\n']                 # outputs kept (nbdev_clean leaves them)
    assert cells[0]['metadata'] == {'tags': ['parameters']}             # papermill's metadata cleaned, the tag kept
    assert len(cells) == 2 and cells[1]['execution_count'] is None       # nothing injected: the default run
    assert json.loads((tmp_path / 'runs' / '20_demo.done').read_text())['notebook'] == str(nb)


def test_paper_run_keeps_figures_inline(tmp_path, monkeypatch):
    monkeypatch.setenv('MPLBACKEND', 'Agg')     # as under make: the executed notebook must still show the figure
    nb = _notebook(tmp_path, 'import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1])\nfig')
    paper_cli(['run', '--runs-dir', str(tmp_path / 'runs'), '--name', '20_demo', '--notebook', str(nb)])
    outputs = json.loads((tmp_path / 'runs' / '20_demo.ipynb').read_text())['cells'][-1]['outputs']
    assert any('image/png' in o.get('data', {}) for o in outputs), outputs


def test_paper_run_elsewhere_never_writes_back(tmp_path):
    nb = _notebook(tmp_path, 'print(greeting * n)')
    before = nb.read_text()
    paper_cli(['run', '--runs-dir', str(tmp_path / 'runs'), '--write-back', '--name', '20_demo-other', '--notebook', str(nb),
               '--param', 'n=2'])
    assert nb.read_text() == before                                      # another run of the notebook: a copy only
    executed = json.loads((tmp_path / 'runs' / '20_demo-other.ipynb').read_text())
    assert 'hellohello' in json.dumps(executed['cells'])


def test_paper_run_failure_names_the_executed_copy(tmp_path, capsys):
    nb = _notebook(tmp_path, "raise ValueError('boom')")
    with pytest.raises(SystemExit) as e:
        paper_cli(['run', '--runs-dir', str(tmp_path / 'runs'), '--name', '20_demo', '--notebook', str(nb)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert '20_demo failed' in err and '20_demo.ipynb' in err and 'Traceback' not in err
    assert not (tmp_path / 'runs' / '20_demo.done').exists()

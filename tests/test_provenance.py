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


def _meta(folder, *stems):
    "The sidecars `<folder>/<stem>.meta.json`."
    return [f'{folder}/{stem}.meta.json' for stem in stems]


CLT = ('clt_diff_summary', 'clt_graph_edges', 'clt_language_probe', 'clt_mixture_selectivity', 'clt_quality',
       'clt_selectivity', 'clt_steering_summary')
CLT_TABLES = CLT + ('clt_diff_edges', 'clt_diff_features', 'clt_diff_model_loss', 'clt_diff_quality',
                    'clt_feature_selectivity', 'clt_graph_nodes', 'clt_language_features', 'clt_steering', 'clt_train_log')
LC_FIGURES = ('lc_failure_modes', 'lc_finetune', 'lc_finetune_loss', 'lc_lens_by_language', 'lc_lens_summary', 'lc_outcomes',
              'lc_phases', 'lc_similarity')
LC_TABLES = LC_FIGURES + ('lc_finetune_set', 'lc_lens', 'lc_scenario_answers', 'lc_task_items', 'lc_token_sets')
LC_INSTRUCT = tuple(f'{s}_organism-balanced-small-instruct' for s in LC_TABLES)
LC_GEMMA = tuple(f'{s}_gemma-3-270m' for s in LC_TABLES)

# weights that no longer exist: the organisms were re-trained after these runs
STALE_WEIGHTS = {
    **dict.fromkeys(_meta('data/results', *CLT_TABLES) + _meta('figures', *CLT),
                    'notebook 23 ran on organism-balanced-small d06938c1252c37a0 (current 8c4feec506bf9ba0)'),
    **dict.fromkeys(_meta('data/results', *LC_INSTRUCT) +
                    _meta('figures', *(f'{s}_organism-balanced-small-instruct' for s in LC_FIGURES)),
                    'notebook 24 ran on organism-balanced-small-instruct b00e6deec45d1b17 (current ecf5e123ca144dc6)'),
}

# sidecars without a notebook, a weights hash or a re-make command
NO_PROVENANCE = {
    **dict.fromkeys(_meta('data/results', *CLT_TABLES) + _meta('figures', *CLT),
                    'notebook 23 recorded no notebook (re-make command unknown)'),
    'data/results/langid_accuracy.meta.json':
        "the library chapter 03_langid wrote it: no weights hash of the detector, no parameters cell to re-run",
    **dict.fromkeys(_meta('data/results', 'organisms_fidelity', 'organisms_instructions', 'organisms_perplexity',
                          'organisms_training') + _meta('figures', 'organisms_quality'),
                    '07_organisms made them before its split: the chapter has no parameters cell now; '
                    '27_organism_quality re-makes them'),
}

# parameters of the notebook (its parameters cell now) that the sidecar does not record (issue 19: one declaration)
_ORG = 'organism-balanced-small'
MISSING_PARAMETERS = {
    **dict.fromkeys(_meta('data/results', *LC_GEMMA, *LC_INSTRUCT) +
                    _meta('figures', *(f'{s}_{m}' for s in LC_FIGURES for m in ('gemma-3-270m', 'organism-balanced-small-instruct'))),
                    'notebook 24 did not record batch_size, device, dtype'),
    **dict.fromkeys(_meta('data/results', 'liha_base_vs_instruct', 'liha_base_vs_instruct_mass', 'liha_base_vs_instruct_summary')
                    + _meta('figures', 'liha_base_vs_instruct', 'liha_base_vs_instruct_mass'),
                    'notebook 21 did not record device, dtype, resume'),
    **dict.fromkeys(_meta('data/results', *(f'liha_{s}_{_ORG}' for s in (
                        'broadcasters', 'broadcasters_spearman', 'compensation_layers', 'compensation', 'generations',
                        'switch_rates', 'top_heads_by_language', 'top_heads')))
                    + _meta('figures', *(f'liha_{s}_{_ORG}' for s in (
                        'broadcasters', 'compensation_layers', 'compensation', 'switch_rates', 'top_heads_by_language'))),
                    'notebook 20 did not record device, dtype, resume'),
    **dict.fromkeys(_meta('data/results', *(f'liha_script{s}_{_ORG}' for s in ('_by_layer', '_first_token', '', '_top_heads')))
                    + _meta('figures', *(f'liha_script{s}_{_ORG}' for s in ('_by_layer', '_first_token'))),
                    'notebook 22 did not record device, dtype, resume, top_k'),
    **dict.fromkeys(_meta('data/results', *(f'neurons_{s}_{_ORG}' for s in (
                        'ap_scores', 'ap_summary', 'ap_vs_lape', 'first_last', 'layers', 'overlap', 'sites',
                        'tampering_by_language', 'tampering_generations', 'tampering', 'tampering_tests', 'timing')))
                    + _meta('figures', *(f'neurons_{s}_{_ORG}' for s in ('ap_vs_lape', 'layers', 'overlap', 'tampering'))),
                    'notebook 25 did not record batch_size, gen_batch_size, device, dtype, resume'),
    **dict.fromkeys(_meta('data/results', *(f'retrieval_{s}' for s in (
                        'by_layer_language', 'head_scores_runs', 'heads', 'masking', 'masking_contrast', 'masking_runs',
                        'needle_answers', 'sharing', 'transition_overlap', 'vs_transition_by_layer')))
                    + _meta('figures', *(f'retrieval_{s}' for s in ('by_layer_language', 'heads', 'masking',
                                                                    'vs_transition_by_layer'))),
                    'notebook 26 did not record batch_size'),
}

# model names whose committed records carry more than one weights hash (the stale files above)
MODELS_WITH_STALE_RESULTS = {'organism-balanced-small': 'the CLT results of notebook 23 (STALE_WEIGHTS)',
                             'organism-balanced-small-instruct': 'the organism run of notebook 24 (STALE_WEIGHTS)'}

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


def test_known_failures_are_committed_files():
    # a list entry whose file is gone (deleted, renamed) must leave its list
    paths = {r['path'] for r in RECORDS}
    listed = set(STALE_WEIGHTS) | set(NO_PROVENANCE) | set(MISSING_PARAMETERS)
    assert not listed - paths, sorted(listed - paths)
    assert set(MODELS_WITH_STALE_RESULTS) <= set(CURRENT)


def test_every_committed_figure_is_indexed():
    # raises MultilingError naming each committed figure without a sidecar or an index entry
    check_figure_index(FIGURES_DIR)


@pytest.mark.xfail(strict=True, reason='figures/index.md predates the re-make commands (`-p` for the parameters that '
                                       'differ from the defaults); make paper regenerates it (multiling_index)')
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

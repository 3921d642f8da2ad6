"""The figure style holds in the experiment notebooks: every figure they save is made in the paper style (plots.figure or a
plots function, not a bare plt.subplots) and passes plots.check_figure before it is saved, so a CI run of a notebook
fails on a raw column name, a figure wider than the page, a legend over data or a rate without its interval."""
import json, re
from pathlib import Path
import pytest
from multiling import plots

ROOT = Path(__file__).resolve().parents[1]
# the studies whose figures follow the style: every experiment notebook
STYLED = [ROOT / 'nbs' / f'{n}.ipynb' for n in ('20_liha', '21_base_vs_instruct', '22_script_study', '23_clt_steering',
                                                 '24_language_control', '25_language_neurons', '26_retrieval_heads',
                                                 '27_organism_quality', '28_instrument')]


def figure_cells(nb_path):
    cells = json.loads(nb_path.read_text())['cells']
    return [''.join(c['source']) for c in cells if c['cell_type'] == 'code' and 'save_figure(' in ''.join(c['source'])]


@pytest.mark.parametrize('nb', STYLED, ids=lambda p: p.stem)
def test_every_saved_figure_is_checked(nb):
    cells = figure_cells(nb)
    assert cells, f'{nb.name} saves no figure'
    for src in cells:
        saves = len(re.findall(r'save_figure\(', src))
        checks = len(re.findall(r'assert plots\.check_figure\(fig\) == \[\]', src))
        assert checks >= saves, f'{nb.name}: a figure is saved without `assert plots.check_figure(fig) == []`:\n{src[:300]}'
        # the check comes before the save it guards
        assert src.index('plots.check_figure(') < src.index('save_figure('), f'{nb.name}: check after save:\n{src[:300]}'


@pytest.mark.parametrize('nb', STYLED, ids=lambda p: p.stem)
def test_figures_are_made_in_the_paper_style(nb):
    for src in figure_cells(nb):
        assert 'plt.subplots(' not in src and 'figsize=' not in src, (
            f'{nb.name}: a figure sized by hand; use plots.figure(..., width="column" or "page") or a plots function:\n{src[:300]}')
        assert 'tight_layout' not in src, f'{nb.name}: tight_layout fights the constrained layout of plots.figure'


def test_glossary_labels_are_words():
    for name, term in plots.GLOSSARY.items():
        assert '_' not in term.label + term.unit, f'{name}: {term}'
        assert term.kind in ('rate', 'signed', 'value'), f'{name}: {term.kind}'
    assert all('_' not in v for v in plots.VALUE_LABELS.values())


def test_crowded_x_ticks_are_thinned():
    # 18 layers (and 'all') in a third of the page: the labels overlapped (notebook 23 on gemma-3-270m); finish labels
    # every k-th tick, keeps the categorical axis's last label, and the figure then passes check_figure
    import pandas as pd
    layers = pd.DataFrame({'layer': range(18), 'explained_variance': [0.5 + 0.02 * i for i in range(18)]})
    loss = pd.DataFrame({'layer': [str(i) for i in range(18)] + ['all'], 'spliced_loss': [3.0 + 0.01 * i for i in range(19)]})
    fig, axes = plots.figure(1, 3, width='page', height=2.3)
    plots.curves(layers, 'layer', 'explained_variance', ax=axes[0], title='explained variance', err=None)
    plots.bars(loss, 'layer', 'spliced_loss', ax=axes[1], title='next-token loss', err=None)
    fig.canvas.draw()
    assert any('x tick labels overlap' in p for p in plots.check_figure(fig))   # crowded before finish
    plots.finish(fig)
    assert plots.check_figure(fig) == []
    shown = [t.get_text() for t in axes[1].get_xticklabels() if t.get_text()]
    assert shown[0] == '0' and shown[-1] == 'all' and 3 <= len(shown) < 19


def test_named_x_ticks_are_not_thinned():
    # variant names carry meaning: crowded names stay and check_figure reports them
    import pandas as pd
    df = pd.DataFrame({'variant': [f'fine-tuned variant number {i}' for i in range(6)], 'spliced_loss': [3.0] * 6})
    fig = plots.bars(df, 'variant', 'spliced_loss', err=None, width='column')
    assert len([t for t in fig.axes[0].get_xticklabels() if t.get_text()]) == 6
    assert any('x tick labels overlap' in p for p in plots.check_figure(fig))

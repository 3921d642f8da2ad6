"Every committed figure has a provenance sidecar and an entry in figures/index.md (issue 10)."
import subprocess, sys
from multiling.core import FIGURES_DIR, REPO_ROOT
from multiling.provenance import check_figure_index, committed_figures


def test_every_committed_figure_is_indexed():
    # raises MultilingError naming each committed figure without a sidecar or an index entry
    check_figure_index(FIGURES_DIR)


def test_index_cli_check_runs_clean():
    r = subprocess.run([sys.executable, '-c', 'from multiling.provenance import index_cli; index_cli()', '--check'],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr
    assert f'{len(committed_figures(FIGURES_DIR))} committed figure' in r.stdout

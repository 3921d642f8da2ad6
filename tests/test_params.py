"""One declaration per notebook parameter: each experiment notebook builds its study's `NotebookParams` from its
variables, and its parameters cell and CI yaml name exactly that dataclass's fields."""
import ast, importlib, json, re
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.name for p in (ROOT / 'nbs').glob('2[0-9]_*.ipynb'))
NOT_YET: set[str] = set()  # notebooks still being converted (strict xfails): none left


def parameters_cell(nb: Path) -> list[str]:
    cells = json.loads(nb.read_text())['cells']
    src = next(''.join(c['source']) for c in cells if 'parameters' in c.get('metadata', {}).get('tags', []))
    return [t.targets[0].id for t in ast.parse(src).body if isinstance(t, ast.Assign)]


def params_class(nb: Path):
    "The NotebookParams subclass the notebook builds with `X.from_namespace(globals())`, found by name in multiling."
    code = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
    m = re.search(r'(\w+Params)\.from_namespace\(globals\(\)\)', code)
    assert m, f'{nb.name} does not build its parameters with <Study>Params.from_namespace(globals())'
    for mod in ('params', 'liha', 'lens', 'neurons', 'retrieval', 'clt', 'organisms', 'tasks', 'finetune', 'instrument'):
        try: module = importlib.import_module(f'multiling.{mod}')
        except ImportError: continue
        if hasattr(module, m.group(1)): return getattr(module, m.group(1))
    raise AssertionError(f'{m.group(1)} is not defined in a multiling module')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason='not converted yet'))
                                  if n in NOT_YET else n for n in EXPERIMENTS])
def test_one_declaration_per_parameter(name):
    nb = ROOT / 'nbs' / name
    cls = params_class(nb)
    assert parameters_cell(nb) == cls.names(), f'{name}: the parameters cell and {cls.__name__} must name the same parameters'
    ci = ROOT / 'nbs' / 'ci_params' / (nb.stem + '.yaml')
    assert ci.exists(), f'{name} has no CI setting'
    extra = set(yaml.safe_load(ci.read_text())) - set(cls.names())
    assert not extra, f'{ci.name} sets parameters {sorted(extra)} that {cls.__name__} does not declare'

"""A study and the summary say the same (issue 25): every verdict a committed study notebook prints in its Findings
through `claims.claim_finding` equals that claim's row in the committed claims table, model included.

A Findings line of that kind reads `N. <claim> [<model>]: <VERDICT>. <reason>`; notebook 30 prints the same claim as
`- <claim> [<model>]: <VERDICT>. <reason>`.
"""
import json, re
import pandas as pd
import pytest
from multiling.core import REPO_ROOT
from multiling.claims import CLAIMS, claim_finding

VERDICT_WORDS = 'CONSISTENT|INCONSISTENT|INCONCLUSIVE|NOT TESTABLE|NOT RUN YET'
LINE = re.compile(rf'^\d+\. (?P<claim>.+?) \[(?P<model>[^\]]+)\]: (?P<verdict>{VERDICT_WORDS})\. (?P<reason>.*)$')
TITLES = {c for c, *_ in CLAIMS}


def printed_verdicts(path):
    "Every claim verdict a notebook's outputs print, as (claim, model, verdict, reason)."
    nb = json.loads(path.read_text(encoding='utf-8'))
    found = []
    for cell in nb['cells']:
        for out in cell.get('outputs', []):
            text = ''.join(out.get('text', []))
            for line in text.splitlines():
                m = LINE.match(line)
                if m and m['claim'] in TITLES: found.append((m['claim'], m['model'], m['verdict'].lower(), m['reason']))
    return found


STUDIES = {p.name: printed_verdicts(p) for p in sorted((REPO_ROOT / 'nbs').glob('2[0-9]_*.ipynb'))}
PRINTED = [(nb, *v) for nb, vs in STUDIES.items() for v in vs]


def test_some_study_prints_its_verdicts():
    # the check below must have something to compare: the LIHA study prints its three claims through claim_finding
    assert len([v for v in PRINTED if v[0] == '20_liha.ipynb']) == 3, STUDIES['20_liha.ipynb']


@pytest.mark.parametrize('nb,claim,model,verdict,reason', PRINTED, ids=[f'{v[0]}: {v[1]}' for v in PRINTED])
def test_study_verdict_equals_claims_table(nb, claim, model, verdict, reason):
    table = pd.read_csv(REPO_ROOT / 'data/results/claims.csv').set_index('claim')
    assert claim in table.index, f'{claim!r} is not in claims.csv: re-run nbs/30_claims.ipynb'
    row = table.loc[claim]
    assert (row.model, row.verdict) == (model, verdict), (f'{nb} prints {verdict} on {model}, claims.csv says '
                                                          f'{row.verdict} on {row.model}: re-run the one after the other')


def test_the_line_pattern_reads_claim_finding(tmp_path):
    # the pattern above reads what claim_finding prints (a made-up results folder with no table: not run yet)
    from multiling.claims import ClaimContext, liha_top_head
    ctx = ClaimContext.open(tmp_path, model='m', organism='organism-balanced-small')
    m = LINE.match(f'1. {claim_finding(ctx, liha_top_head)}')
    assert m and m['verdict'] == 'NOT RUN YET' and m['model'] == 'm' and m['claim'] in TITLES

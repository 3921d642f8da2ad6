"""The outcome classifier against the committed audit set (continuations read by people, data/audit/RULE.md): the bars
the project set before the audit, on the held-out sample (scored with the rules frozen) and on all of it."""
from pathlib import Path
import pandas as pd
import pytest
from multiling.instrument import AUDIT_LABELS, audit_scores, load_audit
from multiling.langid import OUTCOMES, classify_outcome

ROOT = Path(__file__).resolve().parents[1]
AUDIT = load_audit(ROOT / 'data' / 'audit' / 'audit_set.csv')


def test_audit_set_is_large_enough_and_labelled_twice():
    assert len(AUDIT) >= 300 and set(AUDIT.label) == set(AUDIT_LABELS) == set(OUTCOMES)
    assert {'tuning', 'held_out'} == set(AUDIT.set)
    # every disagreement of the two readers was settled by a third reading
    differ = AUDIT.label_reader_a != AUDIT.label_reader_b
    assert (AUDIT.adjudicated[differ] == 'True').all()


@pytest.mark.parametrize('subset', ['held_out', 'all'])
def test_switch_precision_and_recall_meet_the_bars(subset):
    rows = AUDIT if subset == 'all' else AUDIT[AUDIT.set == subset]
    s = audit_scores(rows.reset_index(drop=True)).set_index('outcome').loc['switched']
    assert s.n_labelled >= 10
    assert s.precision >= 0.9, s
    assert s.recall >= 0.8, s


def test_degenerate_text_is_never_a_switch():
    rows = AUDIT[AUDIT.label == 'degenerate']
    said = [classify_outcome(t, r).outcome for t, r in zip(rows.text, rows.reference)]
    assert said.count('switched') == 0


def test_committed_scores_are_those_of_the_current_classifier():
    committed = pd.read_csv(ROOT / 'data' / 'results' / 'instrument_audit_scores.csv')
    now = audit_scores(AUDIT).set_index('outcome')
    for o, r in committed[committed.set == 'all'].set_index('outcome').iterrows():
        assert (r.n_predicted, r.true_positives) == (now.loc[o, 'n_predicted'], now.loc[o, 'true_positives']), o

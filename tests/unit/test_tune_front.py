"""Pareto front and the --pick rule, on hand-made fronts (no Ray)."""

from __future__ import annotations

import pytest

from cadasg_dist.tuning.front import (
    OBJECTIVES,
    Constraint,
    PickError,
    PickRule,
    TrialPoint,
    dominates,
    pareto_front,
    parse_pick,
    select,
)


def point(trial_id: str, utility: float | None, fidelity: float | None, epsilon: float | None) -> TrialPoint:
    return TrialPoint(trial_id, {"utility": utility, "fidelity": fidelity, "epsilon": epsilon})


# utility, fidelity, epsilon; hand-checked: d is dominated by b (worse utility and fidelity, same ε),
# e by a (worse everything), the others trade off.
TRIALS = [
    point("a", 0.80, 0.70, 1.0),
    point("b", 0.90, 0.75, 3.0),
    point("c", 0.95, 0.72, 8.0),
    point("d", 0.85, 0.74, 3.0),
    point("e", 0.70, 0.60, 2.0),
    point("f", 0.78, 0.90, 5.0),
]


def test_dominates_needs_one_strict_improvement():
    assert dominates({"utility": 0.9, "epsilon": 1.0}, {"utility": 0.8, "epsilon": 1.0}, OBJECTIVES)
    assert not dominates({"utility": 0.9, "epsilon": 1.0}, {"utility": 0.9, "epsilon": 1.0}, OBJECTIVES)
    assert not dominates({"utility": 0.9, "epsilon": 2.0}, {"utility": 0.8, "epsilon": 1.0}, OBJECTIVES)


def test_front_is_the_hand_computed_set_and_non_dominated():
    front = pareto_front(TRIALS)

    assert [p.trial_id for p in front] == ["a", "b", "c", "f"]
    for p in front:
        assert not any(dominates(q.values, p.values, OBJECTIVES) for q in TRIALS)


def test_a_missing_value_is_worst():
    front = pareto_front([point("x", None, 0.9, 1.0), point("y", 0.5, 0.9, 1.0)])

    assert [p.trial_id for p in front] == ["y"]


def test_front_with_two_objectives_ignores_epsilon():
    directions = {"utility": "max", "fidelity": "max"}

    front = pareto_front(TRIALS, directions)

    assert [p.trial_id for p in front] == ["b", "c", "f"]


@pytest.mark.parametrize("text, expected", [
    ("utility@epsilon<=3", PickRule("utility", (Constraint("epsilon", "<=", 3.0),))),
    ("fidelity@utility>=0.9, eps<8", PickRule("fidelity", (Constraint("utility", ">=", 0.9),
                                                         Constraint("epsilon", "<", 8.0)))),
    ("epsilon", PickRule("epsilon")),
    (" Utility @ ε = 3 ", PickRule("utility", (Constraint("epsilon", "==", 3.0),))),
])
def test_parse_pick(text, expected):
    assert parse_pick(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "needs a rule"),
    ("speed@epsilon<=3", "unknown metric 'speed'"),
    ("utility@epsilon<=three", "needs a number"),
    ("utility@epsilon", "cannot read constraint"),
    ("utility@", "no constraint"),
])
def test_parse_pick_refuses_bad_rules(text, message):
    with pytest.raises(PickError, match=message):
        parse_pick(text)


def test_pick_best_utility_under_an_epsilon_cap():
    front = pareto_front(TRIALS)

    assert select(front, parse_pick("utility@epsilon<=3")).trial_id == "b"
    assert select(front, parse_pick("utility@epsilon<=1")).trial_id == "a"
    assert select(front, parse_pick("utility")).trial_id == "c"
    assert select(front, parse_pick("fidelity@epsilon<=3")).trial_id == "b"
    assert select(front, parse_pick("epsilon@utility>=0.85")).trial_id == "b"


def test_pick_breaks_ties_on_the_other_objectives_then_the_id():
    tied = [point("z", 0.9, 0.7, 3.0), point("y", 0.9, 0.8, 3.0), point("x", 0.9, 0.8, 3.0)]

    assert select(tied, parse_pick("utility")).trial_id == "x"


def test_pick_with_no_eligible_trial_names_the_ranges():
    with pytest.raises(PickError, match=r"no trial meets utility@epsilon<=0.5.*epsilon in \[1, 8\]"):
        select(pareto_front(TRIALS), parse_pick("utility@epsilon<=0.5"))


def test_pick_on_an_objective_the_search_lacks():
    with pytest.raises(PickError, match="no 'epsilon' objective"):
        select(TRIALS, parse_pick("epsilon"), {"utility": "max", "fidelity": "max"})

"""Hyperparameter search with Ray Tune: a fidelity / utility / privacy Pareto front, and a pick.

A sketch (it starts Ray Tune, so the docs test does not run it)::

    from cadasg_dist.tuning import tune, train_picked
    outcome = tune(df, target="whi", context=["region"], trials=16, epsilon=3.0, out="runs/tune",
                   config=CADASGConfig.from_yaml("my_declarations.yaml"))
    [r.trial_id for r in outcome.front()]
    picked = train_picked(outcome, df, "utility@epsilon<=3", out="runs/tune/picked")

Privacy caveat first: the search scores trials on real rows without noise. Trials train and are
scored only on tuning rows that the final (picked) model never trains on; the final model's ε
covers its own training rows, and the tuning rows are not protected. See docs/guides/tuning.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.tuning.final import Picked, pick_member, train_picked
from cadasg_dist.tuning.front import PickRule, TrialPoint, dominates, pareto_front, parse_pick, select
from cadasg_dist.tuning.search import SearchOutcome, SearchRequest, TrialRecord, run_search
from cadasg_dist.tuning.space import DEFAULT_SPACE, SearchSettings, SearchSpace


def tune(frame: pd.DataFrame, *, target: str, context: list[str] | tuple[str, ...], trials: int,
         out: str | Path, epsilon: float | None = None, space: SearchSpace | str | Path | None = None,
         config: CADASGConfig | None = None, pinned: set[str] = frozenset(), seed: int = 0) -> SearchOutcome:
    """Search ``trials`` configurations; ``epsilon`` (or ``config``'s) makes every trial private with ε up to it.

    ``config`` holds what is not searched (declarations, model sizes...); ``pinned`` names config
    keys to keep at ``config``'s value even if the space searches them. A second call with the same
    ``out`` resumes the search.
    """
    base = (config or CADASGConfig()).replace(**{"target": target, "context.columns": list(context)})
    if epsilon is not None:
        base = base.replace(**{"privacy.epsilon": epsilon})
    if not isinstance(space, SearchSpace):
        space = SearchSpace.from_yaml(space or DEFAULT_SPACE)
    cap = base.privacy.epsilon if base.private else None
    request = SearchRequest(base=base, space=space.for_run(epsilon_cap=cap, pinned=set(pinned)), trials=trials,
                            out=Path(out), seed=seed)
    return run_search(request, frame)


__all__ = ["DEFAULT_SPACE", "PickRule", "Picked", "SearchOutcome", "SearchRequest", "SearchSettings", "SearchSpace",
           "TrialPoint", "TrialRecord", "dominates", "pareto_front", "parse_pick", "pick_member", "run_search",
           "select", "train_picked", "tune"]

"""``--pick``: choose one front member by a rule and train its configuration on the final rows.

Privacy caveat first: the picked model trains on the final rows only (with privacy: never on a
tuning row), so its ledger's ε covers exactly its training rows; the tuning rows are not protected
(docs/guides/tuning.md). Which was done is written into the model's ``meta["tuning"]`` next to the ledger,
never left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.tuning.front import PickRule, parse_pick, select
from cadasg_dist.tuning.report import privacy_note
from cadasg_dist.tuning.search import SearchOutcome, TrialRecord, tuning_split


@dataclass(frozen=True)
class Picked:
    record: TrialRecord
    config: CADASGConfig
    model: CADASG
    path: Path | None


def pick_member(outcome: SearchOutcome, rule: PickRule | str) -> TrialRecord:
    """The front member ``rule`` selects (``PickError`` when none meets its constraints)."""
    rule = parse_pick(rule) if isinstance(rule, str) else rule
    front = outcome.front()
    chosen = select([r.point(outcome.objectives) for r in front], rule, outcome.objectives)
    return next(r for r in front if r.trial_id == chosen.trial_id)


def final_rows(outcome: SearchOutcome, frame: pd.DataFrame) -> pd.DataFrame:
    """Private: the rows no trial read. Not private: the whole table (there is nothing to protect)."""
    return tuning_split(outcome.request, frame).final if outcome.request.config.private else frame


def train_picked(outcome: SearchOutcome, frame: pd.DataFrame, rule: PickRule | str, out: Path | None = None,
                 progress: Any = None) -> Picked:
    """Train the picked configuration on ``final_rows`` and record the tuning route in its meta."""
    rule = parse_pick(rule) if isinstance(rule, str) else rule
    record = pick_member(outcome, rule)
    config = outcome.request.config.replace(**record.params) if record.params else outcome.request.config
    model = CADASG(config).fit(final_rows(outcome, frame), progress=progress)
    model.meta["tuning"] = {
        **privacy_note(outcome), "rule": str(rule), "trial": record.trial_id,
        "trials": len(outcome.records), "validation": {k: record.metrics.get(k) for k in outcome.objectives},
        "experiment": str(outcome.experiment),
    }
    path = model.save(out) if out is not None else None
    return Picked(record, config, model, path)

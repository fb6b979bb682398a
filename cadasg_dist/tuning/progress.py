"""One line per validation score on stderr while a search runs (the CLI's view of Tune)."""

from __future__ import annotations

import sys
from typing import Any

from ray.tune import Callback

from cadasg_dist.tuning.front import OBJECTIVES


class TrialProgress(Callback):
    """Tune keeps its callbacks in the experiment state, so a resumed search prints too."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        values = ", ".join(f"{k} {result[k]:.3f}" for k in OBJECTIVES if isinstance(result.get(k), int | float))
        print(f"  trial {trial.trial_id} round {result.get('round')}: {values}", file=sys.stderr, flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"  trial {trial.trial_id} failed: see {trial.local_path}", file=sys.stderr, flush=True)

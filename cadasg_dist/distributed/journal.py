"""The spend journal: a write-ahead record, kept outside the workers, of the DP steps a private
run has begun, so that steps lost with a killed worker are counted once, never dropped.

Privacy caveats first:

* What counts. A step's noised gradients and cache statistics leave a worker in the all-reduce
  (to its peers, then into the shared weights); a worker killed mid-epoch may have sent them. So a
  step counts as spent as soon as any worker begins it: each worker writes the step's number here
  (and waits for the write) before the step draws noise. A step begun by one worker but never
  released is counted too: at most one step per failure is over-counted, never one under-counted.
* Resume. Checkpoints are written at epoch ends; a restarted worker group restores the ledger of
  the last one, which lacks the steps begun after it. ``lost_steps`` is the journal's count minus
  the checkpoint's; the group records them in the ledger before it trains again. The journal's
  count is absolute (not per attempt), so a second failure adds only what it lost: no step is
  counted twice.
* The run keeps its planned number of steps, the lost ones among them: the resumed epoch takes only
  the steps left in it (``ShardPrivacy.batches``), and the run ends with the ledger and ε of an
  uninterrupted run. The model did not learn from the lost steps; that is the failure's cost.
* The final cache pass likewise: once begun it is counted, and a group that lost it does not
  release it again (the model keeps the merged training cache, itself a DP release).
* The journal is an actor pinned to the driver's node: it outlives worker processes and worker
  nodes; losing the driver's node ends the run anyway.

Cost: one actor round trip per worker per step (a millisecond or so on one machine).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class StepJournal:
    """The actor's state: the highest step number any worker began, and whether the final cache
    pass began. Monotone: a late write of a lower number changes nothing."""

    def __init__(self) -> None:
        self.begun = 0
        self.final = False

    def begin(self, step: int) -> int:
        self.begun = max(self.begun, int(step))
        return self.begun

    def begin_final(self) -> bool:
        self.final = True
        return True

    def state(self) -> dict[str, Any]:
        return {"begun": self.begun, "final": self.final}


def start_journal() -> tuple[str, Any]:
    """(name, handle) of a new journal actor on this (the driver's) node; no CPU reserved."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = f"cadasg-journal-{uuid.uuid4().hex}"
    try:
        here: Any = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    except Exception:  # noqa: BLE001 - a Ray client may not know its node: Ray places the actor (no CPU asked)
        here = "DEFAULT"
    handle = ray.remote(StepJournal).options(name=name, num_cpus=0, max_restarts=0,
                                             scheduling_strategy=here).remote()
    ray.get(handle.state.remote())  # started before any worker looks it up
    return name, handle


class JournalClient:
    """A worker's writer: ``begin`` and ``begin_final`` return once the journal holds the write."""

    def __init__(self, name: str) -> None:
        import ray

        self._ray = ray
        self._actor = ray.get_actor(name)

    def begin(self, step: int) -> None:
        self._ray.get(self._actor.begin.remote(step))

    def begin_final(self) -> None:
        self._ray.get(self._actor.begin_final.remote())

    def state(self) -> dict[str, Any]:
        return self._ray.get(self._actor.state.remote())


def lost_steps(journal: dict[str, Any], steps_taken: int) -> int:
    """Steps the journal shows begun that a checkpoint with ``steps_taken`` steps does not hold."""
    return max(int(journal["begun"]) - steps_taken, 0)


class StepTrace:
    """Test hook (``WorkerConfig.trace_dir``): the worker writes its PID to ``rank<r>.pid`` and, as it
    takes each batch, one line to ``rank<r>.steps``, so a test can kill it from outside mid-epoch.
    A file ``pace`` in the folder holding seconds makes each step wait that long first, so an
    epoch outlasts Ray Train's checkpoint registration and a kill lands where the test means it
    to. Off (``folder=None``) in real runs."""

    def __init__(self, folder: str | None, rank: int) -> None:
        self.path = None if folder is None else Path(folder) / f"rank{rank}.steps"
        self.taken = 0
        self.pace = 0.0
        if folder is not None and (Path(folder) / "pace").is_file():
            self.pace = float((Path(folder) / "pace").read_text())
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"rank{rank}.pid").write_text(f"{os.getpid()}\n")

    def steps(self, batches: Iterator[Any]) -> Iterator[Any]:
        if self.path is None:
            yield from batches
            return
        for batch in batches:
            self.taken += 1
            time.sleep(self.pace)
            with self.path.open("a") as f:
                f.write(f"{os.getpid()} {self.taken}\n")
            yield batch

"""Constraints every synthetic row satisfies: ranges, inequalities, fixed combinations, band ties.

* ``base``: the ``Rule`` interface and how a column's values are read, bounded and written;
* ``numeric``: ``Range``, ``Inequality``, ``Band``; ``combinations``: ``Combinations``;
* ``build``: ``build_constraints``, the config's entries checked against the schema and made rules;
* ``checks``: the warnings (training rows that break a rule, a band context left untied);
* ``enforce``: ``ConstraintSet.enforce``, the redraw-then-repair rule sampling applies per chunk.

Declared in ``CADASGConfig.constraints`` (or ``CADASG.add_constraints``) and saved in the model.
"""

from cadasg_dist.constraints.base import Rule, rule_from_dict
from cadasg_dist.constraints.build import build_constraints, with_entries
from cadasg_dist.constraints.combinations import Combinations
from cadasg_dist.constraints.enforce import REDRAW_TRIES, REPAIR_PASSES, ConstraintSet
from cadasg_dist.constraints.numeric import Band, Inequality, Range

__all__ = ["REDRAW_TRIES", "REPAIR_PASSES", "Band", "Combinations", "ConstraintSet", "Inequality", "Range", "Rule",
           "build_constraints", "rule_from_dict", "with_entries"]

"""The private pipeline: how a DP fit reads real rows, built on the mechanisms of ``privacy/``.

* ``prepare``: declarations and DP releases instead of raw statistics (``prepare_private``), with
  ``columns`` (kinds from declarations and storage types) and ``releases`` (the Gaussian
  histogram releases);
* ``budget``: the run's one ``BudgetPlan`` (every noise multiplier, fixed before training);
* ``sampling``: rows capped per privacy unit, Poisson batches of units;
* ``step``: ``DPState``, the DP hooks of the training step and the budget guard;
* ``fit``: ``fit_private``, the one training loop with all of the above.

``privacy/`` (ledger, accounting, calibration, per-sample gradients) imports nothing of the engine;
this package is where the engine and the mechanisms meet.
"""

"""Federated training across institution silos on Flower (see docs/guides/federated.md).

* ``config``: ``FederatedConfig``, the ``federated:`` section of a run config;
* ``plan``: the public ``FederationPlan`` (schema, transforms, context domain) every silo encodes with;
* ``plan_round`` / ``plan_releases``: the plan round that builds it: each silo's noisy statistics,
  summed under pairwise masks, through the central run's releases and post-processing;
* ``silo``: a silo's rounds of the engine's ``train_step``, its cache and its one ledger;
* ``accounting``: a private silo's noisy size (its sampling rate and weight) and the run's
  guarantee (every silo composed, or the largest when silos are declared disjoint in units);
* ``records``: what a silo sends (parameters and cache statistics only) and the SecAgg+ packing;
* ``client`` / ``server``: the Flower handlers' logic; ``simulation``: a run's settings (silos, plan,
  run config);
* ``apps``: the ServerApp and ClientApp (``federated/`` only exposes them to ``flwr run``) and the
  simulation engine.
"""

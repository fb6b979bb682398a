"""CA-DASG as a Flower app: one ClientApp per institution silo, one ServerApp.

``flwr run .`` reads ``[tool.flwr.app]`` in pyproject.toml and loads the two thin modules here;
``cadasg federated`` runs the same apps (``cadasg_dist.federation.apps``) on the simulation engine;
``federated/deploy.py`` starts a SuperLink and one SuperNode per silo with TLS. The logic lives in
``cadasg_dist.federation``, which imports nothing from here; see federated/README.md and
docs/guides/federated.md.
"""

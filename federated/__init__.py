"""CA-DASG as a Flower app: one ClientApp per institution silo, one ServerApp.

``flwr run .`` reads ``[tool.flwr.app]`` in pyproject.toml; ``cadasg federated`` runs the same apps
on the simulation engine; ``federated/deploy.py`` starts a SuperLink and one SuperNode per silo with
TLS. The logic lives in ``cadasg_dist.federation``; see federated/README.md and docs/federated.md.
"""

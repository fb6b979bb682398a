"""Hyperparameter search with Ray Tune: a fidelity / utility / privacy Pareto front, and a pick."""

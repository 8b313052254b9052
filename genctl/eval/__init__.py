"""Likelihood estimators and the evaluation loop shared by ``genctl eval`` and training."""

"""Layers and distributions that models are built from; nothing here is registered as a model."""

"""Model catalogue: each module registers its classes under the names used by ``model=``."""

from genctl.models.base import MODELS, GenerativeModel, build_model

__all__ = ["MODELS", "GenerativeModel", "build_model"]

"""Datasets as in-memory uint8 tensors, read from torchvision's on-disk layouts without torchvision."""

from genctl.data.datasets import DATASETS, DataSplits, load_dataset
from genctl.data.loader import Batches

__all__ = ["DATASETS", "Batches", "DataSplits", "load_dataset"]

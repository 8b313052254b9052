"""genctl: train, evaluate and sample deep generative models of images from the command line."""

__version__ = "0.1.0"

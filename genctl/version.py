"""genctl's version, in a module of its own: checkpoints and exports record it, and the modules
that write them must not import the package face (which imports the Python API lazily)."""

__version__ = "0.1.0"

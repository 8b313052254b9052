"""The ``genctl`` command: a dispatcher in front of one Hydra app per subcommand."""

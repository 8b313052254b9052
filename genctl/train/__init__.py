"""Training: the config built into a run (build), its step, loop, hooks and final report."""

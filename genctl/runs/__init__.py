"""What a run folder holds: its checkpoints and its record (metrics.json), read and written in one place."""

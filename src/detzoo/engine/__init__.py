"""Training engine: trainer core + callbacks, checkpoints, optimiser and schedules, distributed helpers."""

"""A run: the training loop, its steps, who runs it (one process or ranks), checkpoints,
reports and health, and a run's folder read back."""

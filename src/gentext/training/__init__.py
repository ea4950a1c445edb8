"""Training: the loop and its steps, the resumable state, metrics, data parallelism, evaluation."""

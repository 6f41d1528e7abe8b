"""Accumulators of what a run measured: HDR latency per stage, predictions against labels, the model's resources."""

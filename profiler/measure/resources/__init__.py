"""The model's resources over time: the sampler (I/O) and the pure analysis of what it recorded."""

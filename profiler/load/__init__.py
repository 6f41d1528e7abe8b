"""The load generator's I/O: the open-loop engine, its timer, the stage driver and capacity search, worker processes."""

"""What a run leaves behind: the report (assembly, rendering), the SQLite history, MLflow tracking,
the Prometheus exporter."""

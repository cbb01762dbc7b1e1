"""The MLflow model registry and the queries on it (arkor_ops.registry, arkor_ops.models)."""

"""The Prefect flows (arkor_ops.flows) against a real local Prefect server."""

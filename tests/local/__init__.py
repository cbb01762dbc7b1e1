"""The local backend: worker and sidecar as local processes."""

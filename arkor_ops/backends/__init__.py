"""Backends: where runs execute (Kubernetes, local processes) behind :class:`Backend`."""

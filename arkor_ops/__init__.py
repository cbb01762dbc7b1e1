"""arkor-ops: Arkor's trainer API in Python, on your own Kubernetes cluster."""

__version__ = "0.1.0"

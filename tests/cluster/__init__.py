"""Tests against a real Kubernetes control plane (local by default, see tests/k8senv)."""

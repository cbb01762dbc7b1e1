"""The local Kubernetes cluster: upstream control plane plus a node agent that stands in for
kubelet (``scripts/local-cluster``; docs/local-cluster.md)."""

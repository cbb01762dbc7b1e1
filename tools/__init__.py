"""Tools the project runs from its checkout (not installed): the local Kubernetes cluster
(:mod:`tools.k8senv`) and the pinned control-plane build (``tools/k8s-testenv``)."""

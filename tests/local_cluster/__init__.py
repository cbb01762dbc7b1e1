"""The local Kubernetes cluster itself (tools/k8senv): nodes, pods, logs, the pod proxy, RBAC."""

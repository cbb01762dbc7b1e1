"""The Kubernetes backend against a real control plane (the local cluster of tools/k8senv, or
$ARKOR_TEST_KUBECONFIG)."""

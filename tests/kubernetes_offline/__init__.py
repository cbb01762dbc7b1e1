"""The Kubernetes backend's parts that need no cluster: manifests, diagnostics, API-error
mapping, settings, the client."""

"""Kubernetes building blocks of :class:`~arkor_ops.backends.kubernetes.KubernetesBackend`.

| module | owns |
|---|---|
| ``settings`` | :class:`KubernetesSettings` (``ARKOR_K8S_*`` environment) |
| ``manifests`` | pure builder: trainer config + settings → Job, Secret, ConfigMap |
| ``diagnostics`` | pure function: Job + Pods + Events → why the run is waiting or failed |
| ``errors`` | ``ApiException`` → :mod:`arkor_ops.errors`, with hints |
| ``client`` | API clients from a kubeconfig, and an httpx client with the same credentials |
| ``stream`` | the event stream of one run, whatever state it is in |
| ``cancel`` | the record of a cancel every process reads; ended runs are left alone |
| ``run_secret`` | the run's Secret ends with the run (terminal event, cancel, or a sweep) |
| ``adoption`` | whether a Job found by idempotency key may be adopted, and what it still needs |
"""

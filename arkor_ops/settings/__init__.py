"""Every setting arkor-ops reads from the environment, grouped like Prefect's and kopf's.

One package, one module per group, because the groups together pass 400 lines:

| group | class | variables |
|---|---|---|
| run | :class:`RunSettings` | ``ARKOR_JOB_ID``, ``ARKOR_STORAGE_URI``, ``ARKOR_EVENT_LOG`` |
| worker | :class:`WorkerEnvSettings` | the run's + ``ARKOR_*`` of ``python -m arkor_ops.worker`` |
| sidecar | :class:`SidecarSettings` | the run's + ``ARKOR_SIDECAR_*``, ``ARKOR_PING_SECONDS``, … |
| local backend | :class:`LocalSettings` | ``ARKOR_RUNS_DIR``, ``ARKOR_PYTHON``, … |
| Kubernetes backend | :class:`KubernetesSettings` | ``ARKOR_K8S_*`` (and ``KUBECONFIG``) |
| S3 | :class:`S3Settings` | ``ARKOR_S3_ENDPOINT_URL``, ``AWS_REGION``, … |
| backend choice | :class:`BackendChoiceSettings` | ``ARKOR_BACKEND`` |
| flows | :class:`FlowSettings`, :class:`FlowRunSettings` | ``ARKOR_RETRAIN_*``, … |
| registry | :class:`MlflowRegistrySettings` | ``MLFLOW_TRACKING_URI``, ``ARKOR_REGISTRY_*`` |
| serving | :class:`ServingSettings` | ``ARKOR_LLAMA_CPP_HOME`` |
| endpoint pod | :class:`EndpointPodSettings` | ``ARKOR_ENDPOINT_*`` |

Secret variables are listed once (:data:`SECRET_ENV`); :func:`secret_values` gives their values
for redaction. :func:`read` builds a group from the environment (or a given mapping) and raises
:class:`SettingsError` naming each bad variable. The tables in ``docs/`` are rendered from the
field descriptions (:mod:`.docs`). This package is the only one that reads ``os.environ`` as
configuration; it imports nothing of arkor-ops but :mod:`arkor_ops.errors`.
"""

from __future__ import annotations

from arkor_ops.settings._common import SettingsError, env_names, environ, problems, read
from arkor_ops.settings.flows import (
    BACKEND_ENV,
    DEFAULT_CRON,
    BackendChoiceSettings,
    FlowRunSettings,
    FlowSettings,
    default_backend,
)
from arkor_ops.settings.kubernetes import KubeconfigSettings, KubernetesSettings
from arkor_ops.settings.local import LocalSettings
from arkor_ops.settings.registry import MlflowRegistrySettings
from arkor_ops.settings.run import (
    CANCEL_ANNOTATION,
    DATASET_TOKEN_ENV,
    DATASET_URL_ENV,
    DEFAULT_EVENT_LOG,
    DEFAULT_SIDECAR_PORT,
    ENV_PREFIX,
    RunSettings,
)
from arkor_ops.settings.s3 import S3Settings
from arkor_ops.settings.secrets import SECRET_ENV, secret_values
from arkor_ops.settings.serving import (
    LLAMA_CPP_VERSION,
    EndpointPodSettings,
    ServingSettings,
    default_llama_cpp_home,
)
from arkor_ops.settings.sidecar import SidecarSettings
from arkor_ops.settings.worker import WorkerEnvSettings, default_model_cache

__all__ = [
    "BACKEND_ENV",
    "CANCEL_ANNOTATION",
    "DATASET_TOKEN_ENV",
    "DATASET_URL_ENV",
    "DEFAULT_CRON",
    "DEFAULT_EVENT_LOG",
    "DEFAULT_SIDECAR_PORT",
    "ENV_PREFIX",
    "LLAMA_CPP_VERSION",
    "SECRET_ENV",
    "BackendChoiceSettings",
    "EndpointPodSettings",
    "FlowRunSettings",
    "FlowSettings",
    "KubeconfigSettings",
    "KubernetesSettings",
    "LocalSettings",
    "MlflowRegistrySettings",
    "RunSettings",
    "S3Settings",
    "ServingSettings",
    "SettingsError",
    "SidecarSettings",
    "WorkerEnvSettings",
    "default_backend",
    "default_llama_cpp_home",
    "default_model_cache",
    "env_names",
    "environ",
    "problems",
    "read",
    "secret_values",
]

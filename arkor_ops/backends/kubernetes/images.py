"""What the images and the Job agree on: the user, and every path a container writes.

The one source of truth for both sides. :mod:`.manifests` builds the pod's security context,
volumes and environment from these constants; ``images/trainer/Dockerfile`` and
``images/sidecar/Dockerfile`` repeat them in ``USER``, ``ENV`` and ``VOLUME``, and
``tests/kubernetes_offline/test_images.py`` parses both Dockerfiles and the rendered Job and fails
when they drift (a user the image has no files for, a cache path on the read-only root filesystem).
"""

from __future__ import annotations

from arkor_ops.settings import DEFAULT_EVENT_LOG

#: UID and GID of the ``arkor`` user in both images; the pod runs as them (``fsGroup`` too).
RUN_UID = 10001
RUN_GID = 10001

#: Shared by trainer and sidecar: the event log and the cancel marker (an ``emptyDir``).
RUN_DIR = str(DEFAULT_EVENT_LOG.parent)
#: The trainer's caches and HOME: base models, Hugging Face, Triton, Inductor (an ``emptyDir``).
CACHE_DIR = "/var/cache/arkor"
#: Scratch of both containers (an ``emptyDir``); the trainer's work dir is under it.
TMP_DIR = "/tmp"  # noqa: S108 - a pod-private emptyDir, not the host's /tmp
WORK_DIR = f"{TMP_DIR}/arkor-work"
EVENT_LOG = str(DEFAULT_EVENT_LOG)

#: The trainer image's path environment (its Dockerfile sets the same values). The Job sets
#: them too, so a run is laid out the same whatever image or node agent runs it.
TRAINER_PATH_ENV: dict[str, str] = {
    "HOME": CACHE_DIR,
    "XDG_CACHE_HOME": CACHE_DIR,
    "HF_HOME": f"{CACHE_DIR}/huggingface",
    "ARKOR_MODEL_CACHE": f"{CACHE_DIR}/models",
    "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_DIR}/inductor",
    "ARKOR_WORK_DIR": WORK_DIR,
    "ARKOR_EVENT_LOG": EVENT_LOG,
    "UNSLOTH_COMPILE_LOCATION": f"{WORK_DIR}/unsloth_compiled_cache",
    "MPLCONFIGDIR": f"{WORK_DIR}/matplotlib",
}
#: The sidecar image's path environment.
SIDECAR_PATH_ENV: dict[str, str] = {"HOME": TMP_DIR, "ARKOR_EVENT_LOG": EVENT_LOG}

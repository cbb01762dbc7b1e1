"""``KubernetesBackend``: one run = one Job on the cluster's GPU node pool.

* :meth:`KubernetesBackend.submit` creates the Job, then its ConfigMap and Secret (both at
  once) owned by the Job. A run with a Secret has its Job created suspended and resumed once
  the Secret exists (Kueue resumes it instead when a queue is set); a run without one starts at
  once, its pod waiting for the ConfigMap volume. Any failure deletes the Job, and with it
  whatever it owns, so nothing is left behind. With an idempotency
  key the Job name is derived from the key and an existing Job made with that key and the same
  config is adopted (HTTP 409); a failure while completing an adopted Job never deletes it
  (see :mod:`.adoption`).
* A training run is checked first (``ARKOR_K8S_PREFLIGHT``, on by default): ``submit`` creates
  its pre-flight Job on the CPU pool (:func:`~.manifests.build_preflight`), waits for it and
  deletes it; only a passing one creates the run's Job, whose worker continues the log the
  pre-flight stored. A failing one raises :class:`~arkor_ops.errors.PreflightFailedError`
  with the worker's error (the bad row, the gated model) and leaves the run's log, ending in
  ``training.failed``, in storage; no GPU Job ever exists. Deleting the pre-flight Job
  (``cancel()``, the reaper, ``kubectl delete``) stops the submit the same way.
* :meth:`KubernetesBackend.events`: see :mod:`.stream`.
* :meth:`KubernetesBackend.cancel` annotates the Job and its pods (the trainer reads its pod's
  annotation through a ``downwardAPI`` file, so SIGTERM reads as a cancel), records the cancel
  beside the event log, deletes the Job (foreground), and returns once no pod of the run is
  left; a run whose log has ended is left alone (see :mod:`.cancel`).
* :meth:`KubernetesBackend.describe` / :meth:`KubernetesBackend.list_jobs`: status from the Job
  conditions, step and loss from the event log in storage (or the live sidecar).

Settings: :class:`~.settings.KubernetesSettings` (``ARKOR_K8S_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Self

import httpx

from arkor_ops import completions
from arkor_ops.backends.base import TERMINAL_STATUSES, Backend, JobDescription, TrainingJob
from arkor_ops.backends.kubernetes import adoption, run_secret
from arkor_ops.backends.kubernetes import cancel as kube_cancel
from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.backends.kubernetes.client import (
    KubeApi,
    bearer_header,
    httpx_client,
    load_configuration,
)
from arkor_ops.backends.kubernetes.diagnostics import (
    Diagnosis,
    current_pod,
    diagnose,
    sidecar_ready,
    trainer_exit_code,
)
from arkor_ops.backends.kubernetes.stream import RunStream
from arkor_ops.config import TrainerConfig
from arkor_ops.errors import (
    BackendError,
    CheckpointUnavailableError,
    InferenceError,
    JobNotFoundError,
    PermissionDeniedError,
    PreflightFailedError,
    StorageError,
)
from arkor_ops.evaluation import EvaluationConfig
from arkor_ops.eventlog import iter_log_lines
from arkor_ops.events import TERMINAL_STATUS, TERMINAL_TYPES, Frame
from arkor_ops.inference import RUN_ENDED, InferRequest
from arkor_ops.settings import FlowRunSettings, KubernetesSettings, S3Settings, read
from arkor_ops.storage import FileStorage, RunLayout, S3Storage, Storage, s3_client_kwargs

log = logging.getLogger(__name__)

_QUEUED_PHASES = frozenset({"queued", "preflight", "pending", "create-failed", "unschedulable"})
#: Pre-flight phases that fail the submit once they last this long (a missing image, Secret).
_STUCK_PHASES = frozenset({"image-pull-error", "config-error"})
_STUCK_SECONDS = 60.0
_PREFLIGHT_POLL_SECONDS = 1.0


class KubernetesBackend(Backend):
    """Runs training jobs as Kubernetes Jobs (see the module docstring)."""

    def __init__(
        self,
        settings: KubernetesSettings | None = None,
        *,
        configuration: Any = None,
        flow_run_id: str | None = None,
    ) -> None:
        """Create the backend; nothing is contacted until the first call.

        Args:
            settings: backend settings; default: from the environment.
            configuration: a ``kubernetes.client.Configuration``; default: from the settings'
                kubeconfig (or in-cluster).
            flow_run_id: Prefect flow-run id to label the Jobs this backend submits with
                (default ``$PREFECT__FLOW_RUN_ID``), so the reaper finds them.
        """
        self.settings = settings or KubernetesSettings()
        self.flow_run_id = flow_run_id
        self._cfg = configuration
        self._api: KubeApi | None = None
        self._http: httpx.AsyncClient | None = None
        self._storage: Storage | None = None
        self._cancelled: set[str] = set()
        self._evaluations: set[str] = set()  # Jobs seen as evaluations (labels go with the Job)
        self._released: set[str] = set()

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The backend configured by ``ARKOR_K8S_*`` variables.

        Args:
            **overrides: :class:`~.settings.KubernetesSettings` fields that replace the
                environment's (``namespace=``, ``active_deadline_seconds=``, …), and
                ``flow_run_id`` (the label of the Jobs it submits).

        Raises:
            BackendError: a variable or override holds an invalid value, or names no setting.
        """
        flow_run_id = overrides.pop("flow_run_id", None)
        what = "Kubernetes settings"
        settings = read(KubernetesSettings, error=BackendError, what=what, **overrides)
        return cls(settings, flow_run_id=flow_run_id)

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def api(self) -> KubeApi:
        """The API wrapper (created on first use)."""
        if self._api is None:
            cfg = self._cfg or load_configuration(self.settings)
            self._cfg = cfg
            self._api = KubeApi(cfg, self.settings.namespace)
        return self._api

    def storage(self) -> Storage:
        """Run storage as this client reaches it."""
        if self._storage is None:
            uri = self.settings.storage_uri or ""
            if uri.startswith("file://"):
                self._storage = FileStorage()
            else:
                import boto3

                s3 = S3Settings()
                endpoint = self.settings.s3_client_endpoint_url or s3.endpoint_url
                region = s3.region or self.settings.s3_region
                s3 = s3.model_copy(update={"endpoint_url": endpoint, "region": region})
                self._storage = S3Storage(boto3.client("s3", **s3_client_kwargs(s3)))
        return self._storage

    async def run_storage(self, job_id: str) -> tuple[Storage, RunLayout]:
        """The run's prefix from its Job's annotation (else the settings), with this client's
        S3 endpoint (``ARKOR_K8S_S3_CLIENT_ENDPOINT_URL``)."""
        try:
            job: dict[str, Any] | None = await self.api.get_job(job_id)
        except JobNotFoundError:
            job = None
        root = self.events_uri(job_id, job).rsplit("/", 2)[0]
        return self.storage(), RunLayout(root, job_id)

    async def adapter_storage(self, uri: str) -> Storage | None:
        """Run storage's client, for a prefix of the same scheme as ``ARKOR_K8S_STORAGE_URI``
        (another scheme is what the pod may reach and this client not: the worker checks it)."""
        root = self.settings.storage_uri or ""
        if uri.split("://", 1)[0] != root.split("://", 1)[0]:
            return None
        return self.storage()

    def events_uri(self, job_id: str, job: dict[str, Any] | None) -> str:
        """Where the run's persisted event log is (from the Job's annotation when known)."""
        annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
        root = annotations.get("arkor-ops.dev/storage-uri")
        if root:
            return f"{root.rstrip('/')}/events.jsonl"
        if not self.settings.storage_uri:
            raise BackendError("ARKOR_K8S_STORAGE_URI is not set: cannot find the run's log")
        return RunLayout(self.settings.storage_uri, job_id).events

    def _stream(self) -> RunStream:
        if self._http is None:
            direct = self.settings.events_via == "direct"
            self._http = httpx.AsyncClient(timeout=60) if direct else httpx_client(self.api.cfg)
        return RunStream(
            self.api,
            self._http,
            self.storage,
            self.events_uri,
            port=self.settings.sidecar_port,
            direct=self.settings.events_via == "direct",
            cancelled=self._cancelled,
            evaluations=self._evaluations,
        )

    # -- submit -------------------------------------------------------------------------------

    async def submit(
        self,
        config: TrainerConfig,
        *,
        idempotency_key: str | None = None,
        flow_run_id: str | None = None,
    ) -> TrainingJob:
        """Create the run's Job (or adopt the one made with the same idempotency key).

        Args:
            config: the validated trainer config.
            idempotency_key: names the Job deterministically; a second submit adopts it.
            flow_run_id: Prefect flow-run id to label; default ``$PREFECT__FLOW_RUN_ID``.

        Returns:
            The run as the backend knows it.

        Raises:
            BackendError: (PermissionDeniedError, QuotaExceededError, …) a Job this call created
                is deleted again; an adopted one is never deleted. 409: the key belongs to
                another run, or to this run with another config (both hashes named).
        """
        return await self._submit(config, idempotency_key, flow_run_id)

    async def submit_evaluation(
        self,
        config: EvaluationConfig,
        *,
        idempotency_key: str | None = None,
        flow_run_id: str | None = None,
    ) -> TrainingJob:
        """Create an evaluation job: the run's Job shape on the same image, its worker in the
        evaluation stage, labelled ``arkor-ops.dev/stage=evaluation``. Arguments, adoption and
        errors as :meth:`submit`."""
        return await self._submit(config, idempotency_key, flow_run_id)

    async def _submit(
        self,
        config: TrainerConfig | EvaluationConfig,
        idempotency_key: str | None,
        flow_run_id: str | None,
    ) -> TrainingJob:
        if not self.settings.storage_uri:
            raise BackendError("set ARKOR_K8S_STORAGE_URI (s3://bucket/prefix) to submit runs")
        name = m.job_name(config.name, idempotency_key)
        if isinstance(config, EvaluationConfig):
            self._evaluations.add(name)
        objs = m.build_run(
            config,
            self.settings,
            name=name,
            storage_uri=self.settings.storage_uri,
            idempotency_key=idempotency_key,
            flow_run_id=flow_run_id or self.flow_run_id or FlowRunSettings().flow_run_id,
        )
        if isinstance(config, TrainerConfig) and self.settings.preflight:
            await self._preflight(config, objs, idempotency_key)
        job, created = await self._create_or_adopt(objs.job, config, idempotency_key)
        if not created:
            log.info("adopting existing Job %s/%s", self.settings.namespace, name)
            if adoption.needs_completing(job):
                await self._complete(job, objs)  # a failure never deletes what we adopted
            return self._training_job(job, config.to_wire())
        log.info("created Job %s/%s", self.settings.namespace, name)
        try:
            await self._complete(job, objs)
        except BaseException:
            with contextlib.suppress(BackendError):
                await self.api.delete("jobs", name)
            raise
        return self._training_job(job, config.to_wire())

    async def _create_or_adopt(
        self, body: dict[str, Any], config: m.JobConfig, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Create the Job ``body``, or, with a key, adopt the one this key and config made
        (HTTP 409; see :mod:`.adoption`). Returns the Job and whether this call created it."""
        try:
            return await self.api.create("jobs", body), True
        except BackendError as exc:
            if exc.status != 409 or not idempotency_key:
                raise
        job = await self.api.get_job(body["metadata"]["name"])
        adoption.check_adoptable(
            job, namespace=self.settings.namespace, idempotency_key=idempotency_key, config=config
        )
        return job, False

    # -- pre-flight ---------------------------------------------------------------------------

    async def _preflight(
        self, config: TrainerConfig, objs: m.RunObjects, idempotency_key: str | None
    ) -> None:
        """Run the pre-flight Job to its end, then delete it (see the module docstring).

        Skipped when the keyed run's Job exists already (its pre-flight passed). A pre-flight
        Job made by another submit with the same key is adopted and followed; this call
        deletes it once it has ended, or on its own failure only when it created it.

        Raises:
            PreflightFailedError: a check failed (the worker's error).
            BackendError: the pre-flight could not run, was deleted, or ran out of time.
        """
        name = objs.job["metadata"]["name"]
        if idempotency_key:
            with contextlib.suppress(JobNotFoundError):
                await self.api.get_job(name)
                return
        pre = m.build_preflight(objs, self.settings)
        pname = pre.job["metadata"]["name"]
        job, created = await self._create_or_adopt(pre.job, config, idempotency_key)
        log.info("pre-flight of run %s: Job %s/%s", name, self.settings.namespace, pname)
        ended = False
        try:
            await self._complete(job, pre)
            await self._await_preflight(name, pname)
            ended = True
        except PreflightFailedError:
            ended = True
            raise
        finally:
            if created or ended:  # its ConfigMap and Secret go with it (owner references)
                with contextlib.suppress(BackendError):
                    await self.api.delete("jobs", pname)

    async def _await_preflight(self, run: str, pname: str) -> None:
        """Poll the pre-flight Job until it ends; log each phase it goes through."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.preflight_timeout_seconds + 60
        shown: str | None = None
        stuck_since: float | None = None
        while True:
            try:
                job = await self.api.get_job(pname)
            except JobNotFoundError:
                raise BackendError(
                    f"run {run}: its pre-flight Job {pname} was deleted before it ended "
                    "(cancelled?); no GPU Job was created",
                    status=410,
                ) from None
            pods = await self.api.job_pods(pname)
            events = await self.api.events([pname, *(p["metadata"]["name"] for p in pods)])
            diagnosis = diagnose(job, pods, events)
            if diagnosis.phase == "completed":
                log.info("pre-flight of run %s passed", run)
                return
            if diagnosis.terminal:
                raise await self._preflight_failure(run, job, diagnosis)
            if diagnosis.phase != shown:
                shown = diagnosis.phase
                detail = f": {diagnosis.message}" if diagnosis.message else ""
                log.info("pre-flight of run %s: %s%s", run, shown, detail)
            now = loop.time()
            stuck_since = (stuck_since or now) if diagnosis.phase in _STUCK_PHASES else None
            if stuck_since is not None and now - stuck_since > _STUCK_SECONDS:
                hint = f" ({diagnosis.hint})" if diagnosis.hint else ""
                raise BackendError(
                    f"run {run}: its pre-flight pod cannot start ({diagnosis.phase}): "
                    f"{diagnosis.message}{hint}; no GPU Job was created"
                )
            if now > deadline:
                raise BackendError(f"run {run}: its pre-flight did not end in time ({shown})")
            await asyncio.sleep(_PREFLIGHT_POLL_SECONDS)

    async def _preflight_failure(
        self, run: str, job: dict[str, Any], diagnosis: Diagnosis
    ) -> BackendError:
        """The error of a failed pre-flight: the worker's, from the log it stored."""
        stored = await self._stored_events(run, job) or []
        failed = next((e for e in reversed(stored) if e.get("type") == "training.failed"), None)
        if failed is not None:
            return PreflightFailedError(
                f"run {run} failed its pre-flight, no GPU Job was created: {failed.get('error')}",
                status=422,
            )
        phase = next(
            (e for e in reversed(stored) if e.get("type") == "job.phase" and e.get("hint")),
            None,
        )
        why = (phase or {}).get("message") or diagnosis.message or diagnosis.reason
        return BackendError(f"run {run}: its pre-flight failed ({why}); no GPU Job was created")

    async def _complete(self, job: dict[str, Any], objs: m.RunObjects) -> None:
        """Create the ConfigMap/Secret owned by ``job`` (409 = already there), then resume it.

        Both are created at once (one round trip, not two). A Job is suspended when its run has
        a Secret (:func:`~.manifests.build_run`), so its pod starts only after the resume, once
        the Secret exists; a Job without one starts at once, and its pod waits for the
        ConfigMap volume. On a failure the other create is still awaited, so the caller's
        delete of the Job comes after every object the call made.
        """
        owner = m.owner_reference(job)
        parts = [("configmaps", objs.config_map)]
        if objs.secret is not None:
            parts.insert(0, ("secrets", objs.secret))  # its error first: it says more
        results = await asyncio.gather(
            *(self._create_owned(kind, body, owner) for kind, body in parts),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        queued = m.KUEUE_QUEUE_LABEL in ((job.get("metadata") or {}).get("labels") or {})
        if (job.get("spec") or {}).get("suspend") and not queued:  # Kueue resumes a queued one
            await self.api.patch_job(job["metadata"]["name"], {"spec": {"suspend": False}})

    async def _create_owned(self, kind: str, body: dict[str, Any], owner: dict[str, Any]) -> None:
        """Create ``body`` with ``owner`` as its ownerReference; one already there is fine."""
        owned = json.loads(json.dumps(body))
        owned["metadata"]["ownerReferences"] = [owner]
        try:
            await self.api.create(kind, owned)
        except BackendError as exc:
            if exc.status != 409:
                raise

    def _training_job(
        self, job: dict[str, Any], config: dict[str, Any] | None = None, status: str = "queued"
    ) -> TrainingJob:
        meta = job.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        job_status = job.get("status") or {}
        return TrainingJob.model_validate(
            {
                "id": meta["name"],
                "name": annotations.get("arkor-ops.dev/run-name", meta["name"]),
                "status": status,
                "config": config or {},
                "created_at": meta.get("creationTimestamp"),
                "started_at": job_status.get("startTime"),
                "completed_at": job_status.get("completionTime"),
            }
        )

    # -- events -------------------------------------------------------------------------------

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Frame]:
        """The run's frames: sidecar stream, ``job.phase`` while waiting, replay when gone.

        On a terminal event the run's Secret is deleted before the event is passed on.

        Raises:
            StreamError: with the status the trainer's reconnect policy needs.
        """
        async with contextlib.aclosing(self._stream().frames(job_id, last_event_id)) as frames:
            async for frame in frames:
                if frame.event in TERMINAL_TYPES:
                    await self._release_secret(job_id)  # the run has ended
                yield frame

    async def infer(
        self, job_id: str, step: int, request: InferRequest
    ) -> AsyncIterator[dict[str, Any]]:
        """POST to the run pod's sidecar, through the API server's pod proxy (the path the
        event stream takes; RBAC: ``create`` on ``pods/proxy``), or the pod IP when direct.

        Raises:
            CheckpointUnavailableError: the run ended (no Job, a finished Job, no running pod),
                or the worker no longer holds ``step`` (a replacement pod holds none before its
                own checkpoints).
            InferenceError: the API server, the sidecar or the worker refused or failed.
        """
        try:
            pods = await self.api.job_pods(job_id)
        except JobNotFoundError:
            raise CheckpointUnavailableError(job_id, step, RUN_ENDED, "its Job is gone") from None
        pod = current_pod(pods)
        if pod is None or not sidecar_ready(pod):
            if await self._ended(job_id):
                raise CheckpointUnavailableError(job_id, step, RUN_ENDED, "no pod runs it")
            raise InferenceError(f"run {job_id} has no running pod to answer infer() (yet)")
        stream = self._stream()
        url = stream.sidecar_url(job_id, pod, completions.route(job_id, step))
        direct = self.settings.events_via == "direct"
        headers = {} if direct else bearer_header(self.api.cfg)
        client = (
            httpx.AsyncClient(timeout=completions.timeout())
            if direct
            else httpx_client(self.api.cfg, read_timeout=completions.READ_TIMEOUT_SECONDS)
        )
        try:
            async with client:
                answer = completions.post(
                    client, url, job_id, step, request.to_wire(), headers=headers
                )
                async with contextlib.aclosing(answer):  # type: ignore[type-var]
                    async for item in answer:
                        yield item
        except InferenceError as exc:
            if isinstance(exc, CheckpointUnavailableError) or exc.status in (400, 409, 429):
                raise
            if exc.status in (401, 403):
                raise PermissionDeniedError(
                    f"infer() on run {job_id}: the API server refused the pod proxy "
                    f"({exc}); it needs `create` on pods/proxy in namespace "
                    f"{self.settings.namespace} (k8s/base/role.yaml)",
                    status=exc.status,
                ) from exc
            if await self._ended(job_id):
                raise CheckpointUnavailableError(job_id, step, RUN_ENDED, str(exc)) from exc
            raise

    async def _ended(self, job_id: str) -> bool:
        try:
            return (await self.describe(job_id)).job.status in TERMINAL_STATUSES
        except JobNotFoundError:
            return True

    async def _release_secret(self, job_id: str) -> None:
        """Delete the run's Secret once (best effort; see :mod:`.run_secret`)."""
        if job_id in self._released:
            return
        try:
            await run_secret.release(self.api, job_id)
            self._released.add(job_id)
        except BackendError as exc:
            log.warning("could not delete the Secret of run %s: %s", job_id, exc)

    async def release_finished(self) -> list[str]:
        """Delete the Secret of every finished run not deleted yet (the reaper's sweep).

        Returns:
            The job ids whose Secret was deleted.

        Raises:
            PermissionDeniedError: the credentials may not list Jobs, delete Secrets or patch Jobs.
        """
        released = await run_secret.release_finished(self.api)
        self._released.update(released)
        return released

    # -- cancel -------------------------------------------------------------------------------

    async def cancel(self, job_id: str, *, wait: bool = True) -> None:
        """Stop the run and return once no pod of it is left (``wait=False``: once the Job's
        deletion is requested; its ConfigMap and Secret then go with it, by owner reference).

        Cancelling a finished, cancelled or unknown run is harmless, and so is cancelling a run
        whose log holds a terminal event while its pod is still stopping (the Job not yet
        ``Complete``): nothing changes. The cancel is recorded on the Job (annotation) and
        beside its event log in storage, so every process reads the run as ``cancelled`` even
        if the trainer never heard of it (see :mod:`.cancel`).

        Raises:
            PermissionDeniedError: the credentials may not patch/delete Jobs.
            BackendError: pods were still there after ``cancel_timeout_seconds``.
        """
        api = self.api
        try:
            job = await api.get_job(job_id)
            if diagnose(job, [], []).terminal and not job["metadata"].get("deletionTimestamp"):
                log.info("run %s already finished; nothing to cancel", job_id)
                return
            if await self._log_ended(job_id, job):
                log.info("run %s has ended (its log says so); nothing to cancel", job_id)
                return
            self._cancelled.add(job_id)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            await api.patch_job(job_id, {"metadata": {"annotations": {m.CANCEL_ANNOTATION: stamp}}})
            await kube_cancel.write_record(self.storage, self.events_uri(job_id, job), job, stamp)
            await kube_cancel.annotate_pods(api, job_id, stamp)
            await api.delete("jobs", job_id, grace_seconds=self.settings.cancel_grace_seconds)
        except JobNotFoundError:
            log.debug("Job %s is already gone, or not created yet", job_id)
            self._cancelled.add(job_id)
            await self._cancel_preflight(job_id, wait=wait)
        if not wait:
            return
        await kube_cancel.wait_gone(api, job_id, self.settings.cancel_timeout_seconds)
        for kind, name in (("configmaps", f"{job_id}-config"), ("secrets", f"{job_id}-secrets")):
            with contextlib.suppress(JobNotFoundError):
                await api.delete(kind, name)
        self._released.add(job_id)

    async def _preflight_job(self, job_id: str) -> dict[str, Any] | None:
        """Run ``job_id``'s pre-flight Job while it exists and is not being deleted."""
        try:
            job = await self.api.get_job(m.preflight_name(job_id))
        except JobNotFoundError:
            return None
        return None if job["metadata"].get("deletionTimestamp") else job

    async def _cancel_preflight(self, job_id: str, *, wait: bool) -> None:
        """Stop a run still in its pre-flight: record the cancel beside its log, delete the
        pre-flight Job (its submit then fails: no GPU Job is created). No such Job is fine."""
        pname = m.preflight_name(job_id)
        job = await self._preflight_job(job_id)
        if job is None:
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        await kube_cancel.write_record(self.storage, self.events_uri(job_id, job), job, stamp)
        with contextlib.suppress(JobNotFoundError):
            await self.api.delete("jobs", pname, grace_seconds=self.settings.cancel_grace_seconds)
        log.info("run %s was in its pre-flight: Job %s deleted", job_id, pname)
        if wait:
            await kube_cancel.wait_gone(self.api, pname, self.settings.cancel_timeout_seconds)

    async def _log_ended(self, job_id: str, job: dict[str, Any]) -> bool:
        """Whether the run's log holds a terminal event though the Job has not finished.

        A trainer that exited 0 wrote its terminal event first; else the live sidecar's last
        event tells, else the log persisted to storage.
        """
        pods = await self.api.job_pods(job_id)
        if any(trainer_exit_code(p) == 0 for p in pods):
            return True
        pod = current_pod(pods)
        if pod is not None and sidecar_ready(pod):
            stream = self._stream()
            last = await stream.last_id(job_id, pod, 10.0)
            if last and kube_cancel.log_ended(await stream.peek(job_id, pod, after=last - 1)):
                return True
        return kube_cancel.log_ended(await self._stored_events(job_id, job) or [])

    # -- describe / list ----------------------------------------------------------------------

    async def describe(self, job_id: str) -> JobDescription:
        """The run's status, phase, last step and loss.

        Raises:
            JobNotFoundError: neither a Job nor an event log exists for ``job_id``.
        """
        try:
            job: dict[str, Any] | None = await self.api.get_job(job_id)
        except JobNotFoundError:
            job = None
        if job is None and (pre := await self._preflight_job(job_id)) is not None:
            base = {**pre, "metadata": {**pre["metadata"], "name": job_id}}
            message = "the pre-flight checks the run on the CPU pool; its GPU Job comes next"
            return JobDescription(
                job=self._training_job(base, status="queued"), phase="preflight", message=message
            )
        if job is None:
            log_events = await self._stored_events(job_id, None)
            if await self._cancel_recorded(job_id):
                self._cancelled.add(job_id)  # the Job is gone, its cancel record is not
            elif log_events is None:
                raise JobNotFoundError(
                    f"run {self.settings.namespace}/{job_id}: no Job and no event log", status=404
                )
            return self._describe(job_id, None, None, log_events or [])
        pods = await self.api.job_pods(job_id)
        names = [job_id, *(p["metadata"]["name"] for p in pods)]
        diagnosis = diagnose(job, pods, await self.api.events(names))
        pod = current_pod(pods)
        live = pod is not None and sidecar_ready(pod)
        log_events = await self._stream().peek(job_id, pod) if live and pod else []
        if not any(e.get("type") in TERMINAL_TYPES for e in log_events):
            # the sidecar may be going away with the pod: what it persisted may be newer
            stored = await self._stored_events(job_id, job) or []
            if _last_id(stored) >= _last_id(log_events):
                log_events = stored or log_events
        return self._describe(job_id, job, diagnosis, log_events or [])

    def _describe(
        self,
        job_id: str,
        job: dict[str, Any] | None,
        diagnosis: Diagnosis | None,
        log_events: list[dict[str, Any]],
    ) -> JobDescription:
        terminal = next((e for e in reversed(log_events) if e.get("type") in TERMINAL_TYPES), None)
        last_log = next((e for e in reversed(log_events) if e.get("type") == "training.log"), None)
        if terminal is not None:
            status = TERMINAL_STATUS[str(terminal["type"])]
        elif job_id in self._cancelled or kube_cancel.requested(job):
            status = "cancelled"  # asked for, whether or not the trainer heard of it
        elif diagnosis is None:
            status = "failed"
        elif diagnosis.phase == "cancelling":
            status = "cancelled"
        elif diagnosis.phase in ("completed", "failed"):
            status = diagnosis.phase
        elif diagnosis.phase in _QUEUED_PHASES:
            status = "queued"
        else:
            status = "running"
        base = job or {"metadata": {"name": job_id}}
        training_job = self._training_job(base, status=status)
        if terminal is not None and terminal.get("type") in (
            "training.failed",
            "evaluation.failed",
        ):
            training_job.error = terminal.get("error")
        elif status == "failed" and diagnosis is not None:
            training_job.error = diagnosis.message
        return JobDescription(
            job=training_job,
            step=(last_log or {}).get("step"),
            loss=_last_loss(log_events),
            phase=diagnosis.phase if diagnosis else None,
            message=diagnosis.message if diagnosis else None,
            last_event_id=_last_id(log_events) or None,
        )

    async def _cancel_recorded(self, job_id: str) -> bool:
        """Whether a cancel of the (gone) run left its record in storage."""
        try:
            uri = self.events_uri(job_id, None)
        except BackendError:
            return False
        return await kube_cancel.recorded(self.storage, uri) is not None

    async def _stored_events(
        self, job_id: str, job: dict[str, Any] | None
    ) -> list[dict[str, Any]] | None:
        try:
            uri = self.events_uri(job_id, job)
            data = await asyncio.to_thread(self.storage().get_bytes, uri)
        except (StorageError, BackendError):
            return None
        return list(iter_log_lines(data))

    def job_id_for(self, config: TrainerConfig, idempotency_key: str) -> str | None:
        """The keyed run's Job name: derived from the run name and the key."""
        return m.job_name(config.name, idempotency_key)

    async def jobs_by_flow_run(self) -> dict[str, str]:
        """``{Job name: flow run id}`` of the run Jobs labelled ``arkor-ops.dev/flow-run-id``.

        Raises:
            PermissionDeniedError: the credentials may not list Jobs.
        """
        jobs = await self.api.list_jobs(f"{m.SELECTOR},{m.FLOW_RUN_LABEL}")
        return {j["metadata"]["name"]: j["metadata"]["labels"][m.FLOW_RUN_LABEL] for j in jobs}

    async def list_jobs(self) -> list[JobDescription]:
        """Every run in the namespace, newest first.

        Raises:
            PermissionDeniedError: the credentials may not list Jobs or pods there.
        """
        jobs = await self.api.list_jobs(m.RUNS_SELECTOR)
        pods_data = await self.api.call(
            "list", "pods", self.api.core.list_namespaced_pod, self.api.namespace,
            label_selector=m.SELECTOR,
        )  # fmt: skip
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods_data.get("items") or []:
            owner = ((pod.get("metadata") or {}).get("labels") or {}).get(m.JOB_NAME_LABEL, "")
            by_job.setdefault(owner, []).append(pod)
        out = []
        for job in jobs:
            name = job["metadata"]["name"]
            diagnosis = diagnose(job, by_job.get(name, []), [])
            stored = await self._stored_events(name, job) or []
            out.append(self._describe(name, job, diagnosis, stored))
        out.sort(key=lambda d: d.job.created_at or "", reverse=True)
        return out

    async def aclose(self) -> None:
        """Close the HTTP and API connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._api is not None:
            self._api.close()
            self._api = None


def _last_loss(events: list[dict[str, Any]]) -> float | None:
    """The last training loss logged (an evaluation's ``training.log`` has none)."""
    for event in reversed(events):
        if event.get("type") == "training.log" and event.get("loss") is not None:
            return float(event["loss"])
    return None


def _last_id(events: list[dict[str, Any]]) -> int:
    """The highest event id in ``events`` (0 when none has one)."""
    return max((int(e.get("id") or 0) for e in events), default=0)

"""The blocking twin: :class:`Trainer` and :func:`create_trainer` (Arkor's ``createTrainer``).

:class:`Trainer` runs :class:`~arkor_ops.trainer.asynchronous.AsyncTrainer`'s coroutines on a
private event loop in a daemon thread (:class:`~arkor_ops.blocking.BlockingRunner`), so it works
from plain scripts and from threads that already run an event loop. :func:`create_trainer` is
derived from :func:`create_async_trainer`: one signature, kept once.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar, Unpack

from arkor_ops.backends.base import Backend, TrainingJob
from arkor_ops.blocking import BlockingTwin
from arkor_ops.checkpoints import CheckpointInfo
from arkor_ops.config import TrainerConfig
from arkor_ops.results import Observers, StartResult, TrainingResult
from arkor_ops.trainer.asynchronous import AsyncTrainer, create_async_trainer

T = TypeVar("T")
P = ParamSpec("P")

__all__ = ["Trainer", "create_trainer"]


class Trainer(BlockingTwin[AsyncTrainer]):
    """Blocking twin of :class:`AsyncTrainer`. Made by :func:`create_trainer`.

    Its coroutines run on a private event loop in a daemon thread, so it works from a plain
    script and from a thread that already runs an event loop. A ``KeyboardInterrupt`` while
    blocked in a method propagates at once; it stops following the stream but never cancels
    the run (call :meth:`cancel` for that).

    A context manager: ``with create_trainer(...) as trainer:`` closes it on the way out
    (:meth:`close`).
    """

    def __init__(self, inner: AsyncTrainer) -> None:
        super().__init__(inner, "arkor-ops-trainer-loop")

    def __repr__(self) -> str:
        return f"Trainer(name={self.name!r}, job_id={self.job_id!r})"

    @property
    def name(self) -> str:
        """The run name from the config."""
        return self._inner.name

    @property
    def config(self) -> TrainerConfig:
        """The validated config."""
        return self._inner.config

    @property
    def job(self) -> TrainingJob | None:
        """The latest job snapshot (``None`` before ``start()``)."""
        return self._inner.job

    @property
    def job_id(self) -> str | None:
        """The job id (``None`` before ``start()``)."""
        return self._inner.job_id

    @property
    def backend(self) -> Backend:
        """The backend (resolved on first use; see :attr:`AsyncTrainer.backend`)."""
        return self._inner.backend

    @property
    def async_trainer(self) -> AsyncTrainer:
        """The :class:`AsyncTrainer` this object drives."""
        return self._inner

    def start(self) -> StartResult:
        """Blocking :meth:`AsyncTrainer.start`."""
        return self._run(self._inner.start())

    def wait(self) -> TrainingResult:
        """Blocking :meth:`AsyncTrainer.wait`."""
        return self._run(self._inner.wait())

    def cancel(self) -> None:
        """Blocking :meth:`AsyncTrainer.cancel`."""
        self._run(self._inner.cancel())

    def checkpoints(self) -> list[CheckpointInfo]:
        """Blocking :meth:`AsyncTrainer.checkpoints`."""
        return self._run(self._inner.checkpoints())

    def observing(self, **callbacks: Unpack[Observers]) -> contextlib.AbstractContextManager[None]:
        """:meth:`AsyncTrainer.observing` (the callbacks run on the trainer's own loop thread)."""
        return self._inner.observing(**callbacks)


def _blocking_twin(make: Callable[P, AsyncTrainer]) -> Callable[P, Trainer]:
    """``make``'s blocking twin: the same parameters (one signature, kept once), a
    :class:`Trainer` around the :class:`AsyncTrainer` it makes."""

    @functools.wraps(make)
    def create_trainer(*args: P.args, **kwargs: P.kwargs) -> Trainer:
        return Trainer(make(*args, **kwargs))

    signature = inspect.signature(make).replace(return_annotation=Trainer)
    create_trainer.__signature__ = signature  # type: ignore[attr-defined]
    create_trainer.__name__ = create_trainer.__qualname__ = "create_trainer"
    create_trainer.__doc__ = """Make a :class:`Trainer` (Arkor's ``createTrainer``): the
    arguments of :func:`create_async_trainer`; its methods block. Validates locally; contacts
    nothing."""
    del create_trainer.__wrapped__  # type: ignore[attr-defined]
    return create_trainer


create_trainer = _blocking_twin(create_async_trainer)

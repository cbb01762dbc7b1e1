"""Test helpers: :class:`FakeBackend`, a scripted run served over real HTTP and SSE on loopback.

::

    from arkor_ops.testing import Connection, FakeBackend, scripted_events

    with FakeBackend(scripted_events("fake-1", steps=3), connections=[
        Connection(status=503, error="warming up"),
        Connection(frames=2, then="drop"),
    ]) as fake:
        result = create_trainer(..., backend=fake).wait()
    assert fake.last_event_ids == [None, None, "2"]

Each stream connection follows the next :class:`Connection` (status codes, delays, pings,
malformed frames, then ``end`` / ``close`` / ``drop`` / ``hang``); :class:`Fault` answers a
submit or cancel; everything the fake received is in ``fake.requests``. The server is Starlette
on uvicorn (the sidecar's stack), so this module needs the ``sidecar`` extra.
"""

from arkor_ops.testing._fake import (
    MALFORMED_FRAME,
    Connection,
    FakeBackend,
    Fault,
    RecordedRequest,
    Then,
    scripted_events,
)

__all__ = [
    "MALFORMED_FRAME",
    "Connection",
    "FakeBackend",
    "Fault",
    "RecordedRequest",
    "Then",
    "scripted_events",
]

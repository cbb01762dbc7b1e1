"""The event-stream decoder (arkor_ops/sse.py) against the WHATWG rules, chunked every way."""

from __future__ import annotations

import pytest

from arkor_ops.events import Frame, TrainingLog, decode_event
from arkor_ops.sse import FrameDecoder

STREAM = (
    "\ufeff: a comment\n"
    'id: 1\nevent: training.log\ndata: {"a": 1}\n\n'
    "event: ping\ndata: \n\n"  # no id: the last one carries over
    "data: first line\ndata: second line\nretry: 10\nunknown: x\n\n"
    "id: 2\x00\nevent: nothing\n\n"  # an id with NUL is ignored; no data: not dispatched
    "id: 3\ndata:no space é\n\n"
    "id: 4\ndata: unfinished"  # no blank line before the end: dropped
)
EXPECTED = [
    Frame("training.log", '{"a": 1}', "1"),
    Frame("ping", "", "1"),
    Frame("message", "first line\nsecond line", "1"),
    Frame("message", "no space é", "3"),
]


def decode(chunks: list[bytes]) -> list[Frame]:
    decoder = FrameDecoder()
    return [frame for chunk in chunks for frame in decoder.feed(chunk)]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending_decodes_the_same_frames(newline: str) -> None:
    data = STREAM.replace("\n", newline).encode()
    assert decode([data]) == EXPECTED


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_a_stream_cut_at_any_byte_decodes_the_same_frames(newline: str) -> None:
    """A chunk may end anywhere: inside a line, between CR and LF, inside a UTF-8 character."""
    data = STREAM.replace("\n", newline).encode()
    for cut in range(1, len(data)):
        assert decode([data[:cut], data[cut:]]) == EXPECTED, cut
    assert decode([data[i : i + 1] for i in range(len(data))]) == EXPECTED


def test_a_frame_knows_whether_it_carries_an_event() -> None:
    line = '{"id": 7, "type": "training.log", "jobId": "j", "step": 3, "loss": NaN}'
    frame = Frame("training.log", line, "7")  # Python's json writes NaN for a diverged loss
    assert frame.has_payload
    assert isinstance(frame.parsed, TrainingLog)
    assert frame.parsed.step == 3 and frame.parsed.loss is None  # NaN read, then made null
    assert decode_event('{"type": "from.a.newer.server", "jobId": "j"}') == (True, None)
    assert decode_event('{"jobId": "j"}') == (True, None)
    assert decode_event("{not json") == (False, None)
    assert decode_event("[1, 2]") == (False, None)
    assert decode_event("") == (False, None)

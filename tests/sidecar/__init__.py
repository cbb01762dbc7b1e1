"""The sidecar: its SSE endpoint, access control, replay, browsers."""

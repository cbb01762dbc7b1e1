"""`arkor-ops studio`: its API behind the session token, loopback binding, and the page in a
real browser during a real run."""

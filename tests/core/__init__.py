"""The client side without a backend process: config, events, the trainer's semantics against
the fake backend (arkor_ops.testing), callbacks, reconnects, abort, the public API."""

"""Test configuration: shared fixtures are pytest plugins, one module per real part."""

import signal

# A suite started in the background by a non-interactive shell (`make test &`, a CI runner's
# detached job) inherits SIGINT ignored, and so would every process it starts: the tests that
# press Ctrl-C on a child (a trainer's wait(), `arkor-ops dev`) would then wait for nothing.
# Give this process, and through exec its children, a terminal's disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.models",
    "tests.fixtures.hub",
    "tests.fixtures.mlflow",
    "tests.fixtures.cluster",
    "tests.fixtures.images",
]

"""Test configuration: shared fixtures are pytest plugins, one module per real part."""

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.models",
    "tests.fixtures.hub",
    "tests.fixtures.mlflow",
    "tests.fixtures.cluster",
    "tests.fixtures.images",
]

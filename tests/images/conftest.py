"""Images built by scripts/build-images.sh, and a pod's container run from them with runc.

The images must be built from this checkout (``make test`` builds them before pytest; by hand:
``scripts/build-images.sh``): a test fails, rather than skips, when they are not.
"""

from __future__ import annotations

import pytest

from tests.images.helpers import built_image


@pytest.fixture(scope="session")
def trainer_image() -> str:
    """Tag of the trainer image built from this checkout."""
    return built_image("trainer")

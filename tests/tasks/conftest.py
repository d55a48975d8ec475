import pytest

from tumbler.runtime.images import ImageStore
from taskdirs import new_images_removed


@pytest.fixture
def fresh_images():
    """Images (build steps included) that a test makes are removed after it."""
    before = {i.name for i in ImageStore().list()}
    yield
    new_images_removed(before)

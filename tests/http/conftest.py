from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_runners.testing.fake_api import FakeModelAPI


@pytest.fixture
def api() -> Iterator[FakeModelAPI]:
    """The fake model API on 127.0.0.1, one per test."""
    with FakeModelAPI() as fake:
        yield fake

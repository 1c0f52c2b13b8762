"""Test helpers shipped with the library, so users can test offline too: a fake model API server."""

from .fake_api import FakeModelAPI, FakeToolCall, RecordedRequest, Reply

__all__ = ["FakeModelAPI", "FakeToolCall", "RecordedRequest", "Reply"]

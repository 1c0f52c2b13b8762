"""What every wrapper (a Provider around a Provider) shares: it answers to the inner provider's identity and hands
models, health, start-up, closing and process bookkeeping down to it. A wrapper subclasses :class:`Wrapper` and
writes only ``stream`` (and ``complete`` when it does something different there)."""

from __future__ import annotations

from ..provider import Provider
from ..types import Health, ModelInfo

__all__ = ["Wrapper"]


class Wrapper(Provider):
    """A provider around ``inner`` (see the module docstring). ``stream`` is left to the subclass."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        # class attributes on Provider, shadowed per instance (setattr keeps mypy from treating it as a write to
        # the class variable)
        for attr in ("name", "display_name", "capabilities", "default_model"):
            setattr(self, attr, getattr(inner, attr))

    async def models(self) -> list[ModelInfo]:
        return await self.inner.models()

    async def health(self) -> Health:
        return await self.inner.health()

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def processes(self) -> dict[str, int]:
        return self.inner.processes()

    def limit_processes(self, limit: int) -> None:
        self.inner.limit_processes(limit)

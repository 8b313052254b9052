"""Name -> class tables filled by decorators, so adding a model is one module plus one YAML.

Every module of the owning package is imported on first lookup, so a new file registers itself
without being listed anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from genctl.errors import GenctlError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = cls
            return cls

        return add

    def _load(self) -> None:
        if not self._loaded:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
            self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._entries:
            raise GenctlError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return self._entries[name]

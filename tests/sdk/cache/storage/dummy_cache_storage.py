"""An in-memory key-value storage, as the SDK's cache tests use."""

from __future__ import annotations

from typing import Any

from cloudinary.cache.storage.key_value_storage import KeyValueStorage


class DummyCacheStorage(KeyValueStorage):
    def __init__(self) -> None:
        self._storage: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        return self._storage.get(key)

    def set(self, key: Any, value: Any) -> bool:
        self._storage[key] = value
        return True

    def delete(self, key: Any) -> bool:
        self._storage.pop(key, None)
        return True

    def clear(self) -> bool:
        self._storage = {}
        return True

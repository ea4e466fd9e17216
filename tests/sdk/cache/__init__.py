"""The SDK tests import `test.cache.storage.dummy_cache_storage`."""

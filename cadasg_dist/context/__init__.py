"""Contexts: the extractor that maps rows to context ids, and the per-context cache.

The cache (torch) is imported when first named, so reading a model's contexts to sample from it
does not load torch."""

from typing import Any

from cadasg_dist.context.extractor import ContextExtractor, RuleContextExtractor

__all__ = ["CacheStats", "ContextCache", "ContextExtractor", "RuleContextExtractor", "project_psd"]


def __getattr__(name: str) -> Any:
    if name in ("CacheStats", "ContextCache", "project_psd"):
        from cadasg_dist.context import cache

        return getattr(cache, name)
    raise AttributeError(name)

"""Contexts: the extractor that maps rows to context ids, and the per-context cache."""

from cadasg_dist.context.cache import CacheStats, ContextCache, project_psd
from cadasg_dist.context.extractor import ContextExtractor, RuleContextExtractor

__all__ = ["CacheStats", "ContextCache", "ContextExtractor", "RuleContextExtractor", "project_psd"]

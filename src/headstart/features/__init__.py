"""Stage 3: bottleneck features, computed once per image and kept in an on-disk cache."""

from headstart.features.cache import FeatureCache, default_cache_dir
from headstart.features.extract import BatchFeatures, ExtractionResult, FeatureExtractor

__all__ = [
    "BatchFeatures",
    "ExtractionResult",
    "FeatureCache",
    "FeatureExtractor",
    "default_cache_dir",
]

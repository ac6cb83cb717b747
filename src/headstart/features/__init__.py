"""Stage 3: bottleneck features, computed once per image and kept in an on-disk cache."""

from headstart.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "FeatureCache": "headstart.features.cache",
        "default_cache_dir": "headstart.context",
        "BatchFeatures": "headstart.features.extract",
        "ExtractionResult": "headstart.features.extract",
        "FeatureExtractor": "headstart.features.extract",
    },
)
__all__ = [
    "BatchFeatures",
    "ExtractionResult",
    "FeatureCache",
    "FeatureExtractor",
    "default_cache_dir",
]

"""Stage 2: pretrained backbones, their preprocessing, and the pixels-to-features network."""

from headstart.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "Preprocessing": "headstart.backbones.preprocessing",
        "DEFAULT_BACKBONE": "headstart.backbones.registry",
        "Backbone": "headstart.backbones.registry",
        "list_backbones": "headstart.backbones.registry",
        "resolve_backbone": "headstart.backbones.registry",
    },
)
__all__ = ["DEFAULT_BACKBONE", "Backbone", "Preprocessing", "list_backbones", "resolve_backbone"]

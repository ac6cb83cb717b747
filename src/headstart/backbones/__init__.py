"""Stage 2: pretrained backbones, their preprocessing, and the pixels-to-features network."""

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import (
    DEFAULT_BACKBONE,
    Backbone,
    list_backbones,
    resolve_backbone,
)

__all__ = ["DEFAULT_BACKBONE", "Backbone", "Preprocessing", "list_backbones", "resolve_backbone"]

"""Stage 4: training a new classifier head on top of the frozen backbone's features."""

from headstart.training.fit import FitResult, FitSettings, fit_head
from headstart.training.heads import HeadConfig, build_head

__all__ = ["FitResult", "FitSettings", "HeadConfig", "build_head", "fit_head"]

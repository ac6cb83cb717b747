"""Running headstart on a Ray cluster: the only package that imports Ray (headstart[ray])."""

from headstart.cluster.features import RayCluster, on_ray

__all__ = ["RayCluster", "on_ray"]

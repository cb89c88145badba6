"""The one place the inference's feature reader is chosen: standalone Redis or a Redis Cluster.

A module of its own so that ``features`` (the standalone reader and the shared types) and ``cluster_features``
(which builds on them) do not import each other.
"""

from __future__ import annotations

from forkcast_inference.cluster_features import ClusterFeatureReader, connect_cluster
from forkcast_inference.features import FeatureReader, FeatureSource, connect
from forkcast_inference.settings import InferenceSettings


def open_feature_source(settings: InferenceSettings) -> FeatureSource:
    """The feature reader ``settings`` name: the one place the app's reader is chosen (standalone or Cluster)."""
    if settings.redis_cluster:
        return ClusterFeatureReader(
            connect_cluster(settings.redis_url, settings.redis_timeout_s), settings.feature_prefix
        )
    return FeatureReader(
        connect(settings.redis_url, settings.redis_timeout_s),
        settings.feature_prefix,
        settings.redis_timeout_s,
    )

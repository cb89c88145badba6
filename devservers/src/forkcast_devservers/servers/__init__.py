"""The servers a forkcast test, drill, benchmark or ``make up`` runs on 127.0.0.1, each a context manager."""

from forkcast_devservers.servers.base import HOST, Server
from forkcast_devservers.servers.mlflow import Mlflow
from forkcast_devservers.servers.prometheus import Alertmanager, Prometheus
from forkcast_devservers.servers.redis import RedisCluster, RedisServer
from forkcast_devservers.servers.seaweed import Seaweed

__all__ = ["HOST", "Alertmanager", "Mlflow", "Prometheus", "RedisCluster", "RedisServer", "Seaweed", "Server"]

"""Clicks on the platform's served recommendations: the feedback simulator on the events Redis of the render.

``forkcast_monitoring.simulator.Simulator`` draws a click per served restaurant with the data generator's true odds
(``drift`` moves the world, not the served features). On the platform the events Redis enforces the rendered ACL
users (manifests/base/redis/events.acl), and no single user may both read the prediction stream and write the
feedback stream. The simulator stands in for the clients, whose feedback reaches that stream through the gateway, so
its calls are split the way the cluster splits them: it reads predictions through a consumer group with the rights
of user ``online-auc`` (XGROUP CREATE, XREADGROUP, XACK on fc:events:predictions) and writes feedback with the
rights of user ``gateway`` (XADD to fc:events:feedback), each with its own password from the local Secrets. Nothing
runs with more rights than a rendered user has.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import redis

from forkcast_monitoring.simulator import Simulator


class _SplitPipeline:
    """``xadd`` on the writer's pipeline, ``xack`` on the reader's; ``execute`` runs both."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer

    def xadd(self, *args: Any, **kwargs: Any) -> None:
        self.writer.xadd(*args, **kwargs)

    def xack(self, *args: Any) -> None:
        self.reader.xack(*args)

    def execute(self) -> None:
        self.writer.execute()
        self.reader.execute()


class SplitClient:
    """The few Redis calls ``Simulator`` makes, read ones as ``reader``, the feedback XADD as ``writer``."""

    def __init__(self, reader: redis.Redis, writer: redis.Redis) -> None:
        self.reader, self.writer = reader, writer

    def xgroup_create(self, *args: Any, **kwargs: Any) -> Any:
        return self.reader.xgroup_create(*args, **kwargs)

    def xreadgroup(self, *args: Any, **kwargs: Any) -> Any:
        return self.reader.xreadgroup(*args, **kwargs)

    def pipeline(self, transaction: bool = False) -> _SplitPipeline:
        return _SplitPipeline(self.reader.pipeline(transaction), self.writer.pipeline(transaction))


class Clicks:
    """The simulator in a thread of the drill: ``set_drift`` moves the world from the next batch on."""

    def __init__(self, reader_url: str, writer_url: str, data: Path) -> None:
        self.client = SplitClient(redis.Redis.from_url(reader_url), redis.Redis.from_url(writer_url))
        self.data = data
        self.impressions = 0
        self.drift = 0.0
        self.error: BaseException | None = None
        self._sim = self._simulator(0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="clicks")

    def _simulator(self, drift: float) -> Simulator:
        # One consumer group ("feedback-sim"): a new world continues where the old one stopped reading.
        return Simulator(cast(redis.Redis, self.client), self.data, drift=drift)

    def start(self) -> Clicks:
        self._thread.start()
        return self

    def set_drift(self, drift: float) -> None:
        self._sim, self.drift = self._simulator(drift), drift

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.impressions += len(self._sim.step(block_ms=200))
        except BaseException as exc:  # reported by the drill (stop), which fails with it
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.reader.close()
        self.client.writer.close()

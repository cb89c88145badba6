"""Every metric name of the contract has exactly one producing program: the manifests check follows each name a
rule, analysis or dashboard reads to the workload that runs that program."""

from __future__ import annotations

from forkcast_contract import metric_names


def test_every_name_has_one_producer() -> None:
    names = metric_names.names()
    assert len(names) >= 30
    assert {n: metric_names.producer(n) for n in names.values() if metric_names.producer(n) is None} == {}


def test_a_name_outside_every_prefix_has_none() -> None:
    assert metric_names.producer("forkcast_unknown_rows_total") is None
    assert metric_names.producer("forkcast_lake_rows_total") == "forkcast-lake"
    assert metric_names.producer(metric_names.ONLINE_AUC_RECENT) == "forkcast-online-auc"
    assert metric_names.producer(metric_names.GATEWAY_REQUESTS_TOTAL) == "forkcast-gateway"

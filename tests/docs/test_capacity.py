"""The capacity plan (docs/capacity.md) cannot drift from its inputs (docs/capacity.toml) or from its sources.

The doc's tables must be exactly what scripts/capacity.py computes from the inputs; every measured input must be
found, with its date and command, in the file it cites; the policy's online-AUC and lake defaults must be the
services' own; and the formulas are checked on hand-worked inputs.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from forkcast_lake.retention import RetentionSettings
from forkcast_monitoring.join import JoinConfig
from forkcast_monitoring.settings import MonitoringSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "capacity.py"


@pytest.fixture(scope="module")
def capacity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacity", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_docs_tables_are_what_the_inputs_give(capacity: ModuleType) -> None:
    doc = capacity.doc_block(capacity.DOC.read_text())
    assert doc == capacity.render(capacity.load()), (
        "docs/capacity.md is stale: python scripts/capacity.py --write"
    )


def test_check_refuses_a_doc_whose_tables_were_edited_by_hand(
    capacity: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "capacity.md"
    stale.write_text(
        capacity.DOC.read_text().replace("| serving | inference pods |", "| serving | inference pods! |")
    )
    monkeypatch.setattr(capacity, "DOC", stale)
    assert capacity.main(["--check"]) == 1
    assert capacity.main(["--write"]) == 0
    assert capacity.main(["--check"]) == 0


def test_every_measured_input_is_in_the_file_it_cites(capacity: ModuleType) -> None:
    missing = [
        f"{name}: {what} {source[what]!r} not in {source['file']}"
        for name, source in capacity.load()["measured"].items()
        for what in ("figure", "command", "date")
        if source[what] and source[what] not in (ROOT / source["file"]).read_text()
    ]
    assert not missing, "\n".join(missing)


def test_policy_defaults_are_the_services_own(capacity: ModuleType) -> None:
    policy = capacity.load()["policy"]
    monitoring = MonitoringSettings.model_fields
    assert policy["auc_attribution_s"] == monitoring["auc_attribution_s"].default
    assert policy["auc_max_samples"] == monitoring["auc_max_samples"].default
    assert policy["auc_max_pending"] == JoinConfig().max_pending
    assert policy["lake_keep_days"] == RetentionSettings.model_fields["keep_days"].default


def _value(rows: list[Any], quantity: str) -> str:
    return str(next(r.value for r in rows if r.quantity == quantity))


def test_formulas_on_hand_worked_inputs(capacity: ModuleType) -> None:
    inputs = copy.deepcopy(capacity.load())
    inputs["target"] |= {
        "requests_per_s": 1000,
        "users": 10_000_000,
        "restaurants": 100_000,
        "epoch_rows": 10**9,
    }
    inputs["target"]["training_pods"] = [1, 4]
    inputs["policy"] |= {
        "pod_cores": 2,
        "cpu_utilisation": 0.5,
        "redis_master_max_gb": 1.0,
        "lake_keep_days": 10,
    }
    m = inputs["measured"]
    for name, value in {
        "inference_cpu_us": 1500.0,  # 1,000/s × 1.5 ms = 1.5 cores, / 0.5 = 3 cores -> 2 pods of 2
        "redis_bytes_per_user": 250.0,  # 10 M × 250 B = 2.5 GB of users; copy 0.025 GB -> ⌈2.5 / 0.975⌉ = 3
        "answer_restaurants": 40.0,
        "lake_bytes_per_served_pair": 25.0,  # 1,000 × 86,400 × 40 × 25 B = 86.4 GB a day
        "train_epoch_rows": 50_000_000.0,
        "train_epoch_s": 25.0,  # 2 M rows/s a pod: 10^9 rows in 500 s; 4 pods at 0.8 scaling: 156 s
        "train_scaling_2proc": 0.8,
    }.items():
        m[name]["value"] = value
    m["train_scaling_2proc"]["date"] = "2026-12-05"
    rows = capacity.plan(inputs)
    assert _value(rows, "inference cores") == "3.0"
    assert _value(rows, "inference pods") == "2 (+1)"
    assert _value(rows, "user keys") == "2.5 GB"
    assert _value(rows, "masters for memory") == "3"
    assert _value(rows, "bytes per day") == "86 GB"
    assert _value(rows, "bytes kept") == "0.9 TB"
    assert _value(rows, "1 B-row epoch on 1 pod") == "8 min"
    assert _value(rows, "1 B-row epoch on 4 pods") == "3 min"
    # an undated scaling figure is not used: N pods are shown as a bound, N times one pod (10^9 / 8 M rows/s)
    m["train_scaling_2proc"]["date"] = ""
    assert _value(capacity.plan(inputs), "1 B-row epoch on 4 pods") == "≥ 2 min"


def test_redis_reply_bytes_follow_resp(capacity: ModuleType) -> None:
    # RESP bulk string: "$48\r\n" + 48 bytes + "\r\n"
    assert capacity._bulk(48) == 55
    sent_10, received_10 = capacity.redis_bytes_per_request(1_000_000, 10.0)
    sent_11, received_11 = capacity.redis_bytes_per_request(1_000_000, 11.0)
    assert received_11 - received_10 == 55  # one more restaurant value (48 B) on the wire
    key = capacity.FeatureKeys("fc", "0" * 8, "c1000").restaurant(100_000)
    assert sent_11 - sent_10 == len(f"${len(key)}\r\n{key}\r\n")  # one more key in the MGET

"""The capacity plan's arithmetic: docs/capacity.toml (measured costs, target, policy) -> docs/capacity.md's tables.

    python scripts/capacity.py              # print the tables
    python scripts/capacity.py --write      # put them into docs/capacity.md, between its capacity markers
    python scripts/capacity.py --check      # exit 1 when the doc's tables are not what the inputs give
    python scripts/capacity.py answer-bytes --data data/small   # measure the answer-size inputs

Why a script and not hand-worked numbers: every figure below is a formula over a cost measured here, so a reader
with other costs (their machine, their traffic) edits the TOML and re-runs it, and tests/docs/test_capacity.py fails
when the doc drifts from what the inputs give.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow.parquet as pq
from redis.connection import Connection

from forkcast_contract.feature_store import (
    RESTAURANT_VALUE_BYTES,
    USER_VALUE_BYTES,
    FeatureKeys,
    pointer_copy_key,
)
from forkcast_contract.geo import haversine_m, within_bbox

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "docs" / "capacity.toml"
DOC = ROOT / "docs" / "capacity.md"
BEGIN, END = "<!-- capacity:begin (scripts/capacity.py --write) -->", "<!-- capacity:end -->"
# Coordinates the inference keeps per restaurant: latitude and longitude as float64 (forkcast_inference.features).
COORD_BYTES_PER_RESTAURANT = 16
# Restaurants behind the measured worker RSS (the full preset's 100,000).
MEASURED_RESTAURANTS = 100_000
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Row:
    section: str
    quantity: str
    formula: str
    value: str


def load(path: Path = INPUTS) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _bulk(n: int) -> int:
    """Bytes of a RESP bulk string of n bytes: ``$<n>\\r\\n<data>\\r\\n`` (https://redis.io/docs/latest/develop/reference/protocol-spec/)."""
    return len(f"${n}\r\n") + n + 2


def _packed(*args: str) -> int:
    """Bytes of one command as redis-py writes it to the socket."""
    chunks: list[bytes] = Connection().pack_command(*args)  # type: ignore[no-untyped-call]
    return sum(len(c) for c in chunks)


def redis_bytes_per_request(restaurants: int, answer: float) -> tuple[float, float]:
    """Bytes sent to and received from the features Cluster per request, for the inference's reads.

    The commands as redis-py packs them (GET of the user key, MGET of the pointer copy, the copy's revision and the
    in-range restaurants: services/inference/src/forkcast_inference/cluster_features.py) with a 9-digit user id and
    ids of the size of the largest restaurant id; the replies as RESP bulk strings of the contract's value sizes.
    """
    keys = FeatureKeys("fc", "0" * 8, "c1000")
    width = len(str(restaurants - 1))
    n = round(answer)
    sent = _packed("GET", keys.user(10**8)) + _packed(
        "MGET",
        pointer_copy_key("fc", "c1000"),
        keys.restaurant_revision,
        *([keys.restaurant(10 ** (width - 1))] * n),
    )
    received = (
        _bulk(USER_VALUE_BYTES)
        + len(f"*{n + 2}\r\n")
        + _bulk(8)
        + _bulk(4)
        + n * _bulk(RESTAURANT_VALUE_BYTES)
    )
    return float(sent), float(received)


def plan(inputs: dict[str, Any]) -> list[Row]:
    t, p = inputs["target"], inputs["policy"]
    m = {k: float(v["value"]) for k, v in inputs["measured"].items()}
    rate = float(t["requests_per_s"])
    rows: list[Row] = []

    def add(section: str, quantity: str, formula: str, value: str) -> None:
        rows.append(Row(section, quantity, formula, value))

    # -- serving pods -------------------------------------------------------------------------------------------
    for name, cpu in (("inference", "inference_cpu_us"), ("gateway", "gateway_cpu_us")):
        cores = rate * m[cpu] / 1e6 / p["cpu_utilisation"]
        pods = math.ceil(cores / p["pod_cores"])
        add("serving", f"{name} cores", f"R × {cpu} / 1e6 / cpu_utilisation", f"{cores:.1f}")
        add("serving", f"{name} pods", "⌈cores / pod_cores⌉ (+1 to survive losing one)", f"{pods} (+1)")
    worker_mb = m["inference_worker_rss_mb"] + (
        (t["restaurants"] - MEASURED_RESTAURANTS) * COORD_BYTES_PER_RESTAURANT / 1e6
    )
    add(
        "serving",
        "inference memory per pod",
        f"pod_cores workers × (inference_worker_rss_mb + (restaurants − {MEASURED_RESTAURANTS:,}) × "
        f"{COORD_BYTES_PER_RESTAURANT} B)",
        f"{p['pod_cores'] * worker_mb:.0f} MB",
    )

    # -- features Redis Cluster ---------------------------------------------------------------------------------
    user_gb = t["users"] * m["redis_bytes_per_user"] / 1e9
    copy_gb = t["restaurants"] * m["redis_bytes_per_user"] / 1e9
    by_memory = math.ceil(user_gb / (p["redis_master_max_gb"] - copy_gb))
    redis_cores = rate * m["redis_cpu_us"] / 1e6
    by_cpu = math.ceil(redis_cores / p["redis_cpu_utilisation"])
    masters = max(3, by_memory, by_cpu)
    nodes = masters * (1 + p["redis_replicas_per_master"])
    add("redis", "user keys", "users × redis_bytes_per_user", f"{user_gb:.1f} GB")
    add(
        "redis",
        "one restaurant copy (one per master)",
        "restaurants × redis_bytes_per_user",
        f"{copy_gb:.2f} GB",
    )
    add("redis", "masters for memory", "⌈user GB / (redis_master_max_gb − copy GB)⌉", str(by_memory))
    add("redis", "Redis cores", "R × redis_cpu_us / 1e6", f"{redis_cores:.2f}")
    add("redis", "masters for CPU", "⌈Redis cores / redis_cpu_utilisation⌉", str(by_cpu))
    add("redis", "masters", "max(3, for memory, for CPU)", str(masters))
    add("redis", "memory per master", "user GB / masters + copy GB", f"{user_gb / masters + copy_gb:.1f} GB")
    add(
        "redis",
        "nodes and memory in all",
        "masters × (1 + replicas); × (user GB / masters + copy GB)",
        f"{nodes} nodes, {nodes * (user_gb / masters + copy_gb):.0f} GB",
    )

    # -- network ------------------------------------------------------------------------------------------------
    answer = m["answer_restaurants"]
    answer_bytes = answer * m["answer_bytes_per_restaurant"]
    sent, received = redis_bytes_per_request(t["restaurants"], answer)

    def gbit(bytes_per_request: float) -> str:
        return f"{rate * bytes_per_request * 8 / 1e9:.2f} Gbit/s"

    add(
        "network",
        "requests, on each hop (client → gateway → inference)",
        "R × request_bytes × 8",
        gbit(m["request_bytes"]),
    )
    add(
        "network",
        "answers, on each hop (inference → gateway → client)",
        "R × answer_restaurants × answer_bytes_per_restaurant × 8 (bodies)",
        gbit(answer_bytes),
    )
    add(
        "network",
        "inference → Redis (commands)",
        f"R × {sent:.0f} B × 8 (RESP, redis-py packing)",
        gbit(sent),
    )
    add(
        "network",
        "Redis → inference (replies)",
        f"R × {received:.0f} B × 8 (RESP bulk values)",
        gbit(received),
    )
    add(
        "network",
        "events Redis stream entries",
        "R × (1 prediction + answer_restaurants feedback)",
        f"{rate * (1 + answer):,.0f} entries/s",
    )

    # -- online-AUC job -----------------------------------------------------------------------------------------
    job_cores = rate * m["auc_job_cpu_us"] / 1e6
    processes = math.ceil(job_cores / p["job_cpu_utilisation"])
    add("online AUC", "job cores", "R × auc_job_cpu_us / 1e6", f"{job_cores:.1f}")
    add("online AUC", "job processes", "⌈job cores / job_cpu_utilisation⌉", str(processes))
    add(
        "online AUC",
        "predictions pending (all processes)",
        "min(R × auc_attribution_s, auc_max_pending × processes)",
        f"{min(rate * p['auc_attribution_s'], p['auc_max_pending'] * processes):,.0f}",
    )
    per_process = min(rate / processes * p["auc_attribution_s"], p["auc_max_pending"])
    mib = m["auc_job_base_mib"] + per_process * m["auc_job_bytes_per_pending"] / 2**20
    add(
        "online AUC",
        "memory per process",
        "auc_job_base_mib + min(R / processes × auc_attribution_s, auc_max_pending) × auc_job_bytes_per_pending",
        f"{mib:,.0f} MiB",
    )
    add(
        "online AUC",
        "seconds of traffic in one AUC window",
        "auc_max_samples / (R / processes × answer_restaurants)",
        f"{p['auc_max_samples'] / (rate / processes * answer):.1f} s",
    )

    # -- lake -----------------------------------------------------------------------------------------------------
    per_day = rate * SECONDS_PER_DAY * answer * m["lake_bytes_per_served_pair"]
    add(
        "lake",
        "bytes per day",
        "R × 86,400 × answer_restaurants × lake_bytes_per_served_pair",
        f"{per_day / 1e9:,.0f} GB",
    )
    add(
        "lake",
        "bytes kept",
        "bytes per day × lake_keep_days",
        f"{per_day * p['lake_keep_days'] / 1e12:.1f} TB",
    )
    compact_cores = rate * (1 + answer) * m["lake_compact_cpu_us"] / 1e6
    add(
        "lake",
        "compaction job cores",
        "R × (1 + answer_restaurants) events × lake_compact_cpu_us / 1e6",
        f"{compact_cores:.1f}",
    )

    # -- training -------------------------------------------------------------------------------------------------
    pod_rows = m["train_epoch_rows"] / m["train_epoch_s"]
    scaling = inputs["measured"]["train_scaling_2proc"]
    # Until make bench-train-distributed has a dated figure, N pods are shown at N times one pod: a bound, not a plan.
    measured = bool(scaling["date"])
    efficiency = m["train_scaling_2proc"] if measured else 1.0
    add("training", "rows/s of one 2-core pod", "train_epoch_rows / train_epoch_s", f"{pod_rows / 1e6:.2f} M")
    for n in t["training_pods"]:
        speed = pod_rows * (1 if n == 1 else n * efficiency)
        if n == 1:
            formula = "epoch_rows / pod rows/s"
        elif measured:
            formula = "epoch_rows / (pod rows/s × N × train_scaling_2proc)"
        else:
            formula = (
                "epoch_rows / (pod rows/s × N): a lower bound, the 2-process scaling is not measured yet"
            )
        add(
            "training",
            f"{t['epoch_rows'] / 1e9:g} B-row epoch on {n} pod{'s' if n > 1 else ''}",
            formula,
            ("≥ " if n > 1 and not measured else "") + _duration(t["epoch_rows"] / speed),
        )
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def render(inputs: dict[str, Any]) -> str:
    """The two markdown tables: the plan, then the measured inputs with their sources."""
    t = inputs["target"]
    lines = [
        f"For R = {t['requests_per_s']:,} requests/s, {t['users']:,} users, {t['restaurants']:,} restaurants "
        f"(policy: {', '.join(f'{k} = {v}' for k, v in inputs['policy'].items())}).",
        "",
        "| part | quantity | formula | value |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.section} | {r.quantity} | {r.formula} | {r.value} |" for r in plan(inputs)]
    lines += ["", "| input | value | what | measured by | recorded in | date |", "|---|---|---|---|---|---|"]
    for name, v in inputs["measured"].items():
        source = f"`{v['command']}` | {v['file']} | {v['date'] or 'not yet'}"
        lines.append(f"| `{name}` | {_number(v['value'])} | {v['what']} | {source} |")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _block_span(doc: str) -> tuple[int, int]:
    """Where the generated tables sit in the doc: between the two markers."""
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: no capacity markers")
    return doc.index(BEGIN) + len(BEGIN), doc.index(END)


def doc_block(doc: str) -> str:
    start, end = _block_span(doc)
    return doc[start:end].strip("\n")


def answer_bytes(data: Path) -> tuple[float, float]:
    """(restaurants per answer, JSON bytes per answered restaurant) over a dataset's requests.

    The answer is the inference's (in-range by the contract's box and haversine, at most ``size``) encoded as it
    encodes it (msgspec); scores are drawn in (0, 1), as a sigmoid gives them, since their digits set the size.
    """
    coords = pq.read_table(data / "restaurant_features.parquet", columns=["latitude", "longitude"])
    lat, lng = coords.column("latitude").to_numpy(), coords.column("longitude").to_numpy()
    requests = pq.read_table(data / "requests.parquet").to_pydict()
    rng = np.random.default_rng(0)
    served = body = 0
    for la, lo, cands, size, max_dist in zip(
        requests["latitude"],
        requests["longitude"],
        requests["candidate_restaurant_ids"],
        requests["size"],
        requests["max_dist"],
        strict=True,
    ):
        ids = np.unique(np.asarray(cands))
        near = ids[within_bbox(la, lo, lat[ids], lng[ids], float(max_dist))][:size]
        disp = haversine_m(la, lo, lat[near], lng[near])
        scores = 1 / (1 + np.exp(-rng.normal(size=len(near))))
        items = [
            {"id": i, "score": s, "displacement": d}
            for i, s, d in zip(near.tolist(), scores.tolist(), disp.tolist(), strict=True)
        ]
        body += len(msgspec.json.encode({"restaurants": items})) - len(
            msgspec.json.encode({"restaurants": []})
        )
        served += len(near)
    return served / len(requests["size"]), body / served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/capacity.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--inputs", type=Path, default=INPUTS, help="the TOML of target, policy and measured costs"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in docs/capacity.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/capacity.md's tables are stale")
    sub = parser.add_subparsers(dest="command")
    measure = sub.add_parser(
        "answer-bytes", help="measure restaurants per answer and JSON bytes per restaurant"
    )
    measure.add_argument("--data", type=Path, required=True, help="a dataset directory (requests.parquet, …)")
    args = parser.parse_args(argv)
    if args.command == "answer-bytes":
        per_answer, per_restaurant = answer_bytes(args.data)
        print(f"{per_answer:.1f} restaurants per answer, {per_restaurant:.1f} bytes per restaurant")
        return 0
    tables = render(load(args.inputs))
    if args.write or args.check:
        doc = DOC.read_text()
        current = doc_block(doc)
        if args.check:
            if current != tables:
                print(f"{DOC} is stale: run python scripts/capacity.py --write", file=sys.stderr)
                return 1
            return 0
        start, end = _block_span(doc)
        DOC.write_text(f"{doc[:start]}\n{tables}\n{doc[end:]}")
        return 0
    print(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`forkcast-features`: load, inspect, switch and check the online feature store (SPEC §8).

Connection and naming come from the environment (REDIS_URL, FORKCAST_REDIS_CLUSTER, FORKCAST_FEATURE_PREFIX,
FORKCAST_FEATURE_BATCH_ROWS, FORKCAST_FEATURE_GRACE_SECONDS, FORKCAST_FEATURE_VERIFY_SAMPLE); see README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import redis

from forkcast_features.check import check_consistency
from forkcast_features.client import connect
from forkcast_features.cutover import CutoverError, activate, drop_version, gc, rollback
from forkcast_features.loader import LoadError, load_version
from forkcast_features.settings import FeatureStoreSettings
from forkcast_features.source import BadInputError, read_source
from forkcast_features.status import describe_status
from forkcast_features.updates import (
    UpdateError,
    UpdateLog,
    UpdateNotLoggedError,
    update_restaurant,
    update_user,
)
from forkcast_features.verify import VerifyError, verify_version
from forkcast_features.versions import set_fields
from forkcast_lake.datasets_read import LakeDataError, add_data_arguments, open_data
from forkcast_registry.errors import RegistryError

log = logging.getLogger("forkcast_features")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forkcast-features", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    load = sub.add_parser(
        "load", help="load a dataset into a new feature version, verify it, optionally activate"
    )
    add_data_arguments(load)
    load.add_argument("--activate", action="store_true", help="switch the live pointer to it once verified")
    load.add_argument("--no-progress", action="store_true", help="hide the progress bar (rows/s)")

    sub.add_parser("status", help="list versions, their state and counts, and which one is live")

    act = sub.add_parser("activate", help="make a verified version live (atomic pointer switch)")
    act.add_argument("version", help="version name as shown by `status`")

    sub.add_parser("rollback", help="switch back to the version that was live before the current one")

    g = sub.add_parser("gc", help="delete retired versions past their grace period (SCAN + UNLINK)")
    g.add_argument(
        "--grace-seconds",
        type=float,
        default=None,
        help="override FORKCAST_FEATURE_GRACE_SECONDS (how long a retired version stays readable)",
    )
    g.add_argument(
        "--drop",
        metavar="VERSION",
        default=None,
        help="delete this non-live version now, e.g. a partial load you do not want to resume",
    )

    chk = sub.add_parser("check", help="compare sampled online values with the offline parquet")
    add_data_arguments(chk, help="the dataset the version was loaded from: a directory or s3://bucket/prefix")
    chk.add_argument("--sample", type=int, default=1000, help="ids sampled from each table")
    chk.add_argument("--version", default=None, help="version to check (default: the live one)")

    uu = sub.add_parser("update-user", help="replace one user's 30 features in the live version")
    uu.add_argument("user_id", type=int, help="existing user id")
    uu.add_argument("features", type=float, nargs=30, help="the 30 feature values f00..f29")

    ur = sub.add_parser("update-restaurant", help="replace one restaurant's coordinates and 10 features")
    ur.add_argument("restaurant_id", type=int, help="existing restaurant id")
    ur.add_argument("--lat", type=float, required=True, help="latitude in degrees")
    ur.add_argument("--lng", type=float, required=True, help="longitude in degrees")
    ur.add_argument("features", type=float, nargs=10, help="the 10 feature values f00..f09")
    return p


def _load(args: argparse.Namespace, settings: FeatureStoreSettings) -> int:
    data = open_data(args.data, args.data_version)
    source = read_source(data.directory)
    client = connect(settings)
    prefix = settings.feature_prefix
    result = load_version(
        client, source, prefix=prefix, batch_rows=settings.feature_batch_rows, progress=not args.no_progress
    )
    rows = result.users_written + result.restaurants_written
    rate = rows / result.seconds if result.seconds else 0.0
    print(
        f"version {result.version}: wrote {rows:,} rows in {result.seconds:.1f} s ({rate:,.0f} rows/s)"
        + (" (resumed)" if result.resumed else "")
    )
    report = verify_version(
        client, source, prefix=prefix, version=result.version, sample=settings.feature_verify_sample
    )
    if data.snapshot is not None:
        set_fields(client, prefix, result.version, source_snapshot=json.dumps(data.record(), sort_keys=True))
        print(f"source: {data.snapshot.uri} version {data.snapshot.version}")
    print(f"verified: {report.describe()}")
    if args.activate:
        previous = activate(client, prefix, result.version)
        print(f"live: {result.version} (was {previous or 'none'})")
    return 0


def _update_log(settings: FeatureStoreSettings) -> UpdateLog:
    """The feature-updates stream in the events Redis (FORKCAST_EVENTS_REDIS_URL, else REDIS_URL).

    Outside ``local`` the update is refused before anything is written when the events Redis is unset or is the
    features Redis: the cluster keeps the event streams apart (issue 18.2), and the CLI's ACL user on the features
    Redis may not XADD, so the update would be applied and its record lost.
    """
    if settings.environment != "local" and settings.events_url == settings.redis_url:
        raise UpdateError(
            "FORKCAST_EVENTS_REDIS_URL is "
            + ("unset" if settings.events_redis_url is None else "the features Redis (REDIS_URL)")
            + f" in environment={settings.environment}: the update would not reach the feature-updates stream; "
            "nothing was written"
        )
    timeout = settings.redis_timeout_seconds
    events = redis.Redis.from_url(settings.events_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return UpdateLog(events)


def _run(args: argparse.Namespace, settings: FeatureStoreSettings) -> int:
    prefix = settings.feature_prefix
    if args.command == "load":
        return _load(args, settings)
    client = connect(settings)
    if args.command == "status":
        print(describe_status(client, prefix))
    elif args.command == "activate":
        previous = activate(client, prefix, args.version)
        print(f"live: {args.version} (was {previous or 'none'})")
    elif args.command == "rollback":
        print(f"live: {rollback(client, prefix)}")
    elif args.command == "gc":
        if args.drop:
            print(f"dropped {args.drop}: {drop_version(client, prefix, args.drop):,} keys")
        else:
            grace = settings.feature_grace_seconds if args.grace_seconds is None else args.grace_seconds
            collected = gc(client, prefix, grace)
            for c in collected:
                print(f"collected {c.version}: {c.keys:,} keys")
            if not collected:
                print("nothing to collect")
    elif args.command == "check":
        data_dir = open_data(args.data, args.data_version).directory
        report = check_consistency(client, prefix, data_dir, sample=args.sample, version=args.version)
        print(report.describe())
        return 1 if report.differences else 0
    elif args.command == "update-user":
        events = _update_log(settings)  # refused here, before the write, when the update could not be logged
        version = update_user(client, prefix, args.user_id, args.features, events)
        print(f"updated user {args.user_id} in {version}")
    elif args.command == "update-restaurant":
        events = _update_log(settings)
        version = update_restaurant(
            client, prefix, args.restaurant_id, args.lat, args.lng, args.features, events
        )
        print(f"updated restaurant {args.restaurant_id} in {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Built here, not through the cached getter: one CLI run, one fresh read of the environment.
        return _run(args, FeatureStoreSettings())
    except (BadInputError, FileNotFoundError, LakeDataError, RegistryError, ValueError) as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 2
    except (LoadError, VerifyError, CutoverError, UpdateError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except UpdateNotLoggedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3  # its own status: the write happened, a script must resend rather than treat it as refused
    except redis.RedisError as exc:
        print(f"error: Redis: {exc}", file=sys.stderr)
        return 1

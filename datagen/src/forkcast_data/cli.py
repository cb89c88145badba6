"""``forkcast-data``: generate the SPEC §2 dataset, publish it to the lake, and describe a generated one.

``--out s3://bucket/prefix`` draws into a local staging folder and publishes it as a lake snapshot
(forkcast_lake.datasets): before, a Path-typed ``--out`` turned ``s3://b/x`` into a local folder ``s3:/b/x``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from forkcast_contract.dataset import read_manifest
from forkcast_data.generate import GenerateRequest, generate
from forkcast_data.output import GenerateError
from forkcast_data.presets import PRESETS, preset_sizes
from forkcast_lake.datasets import LakeDataError, publish
from forkcast_lake.datasets_cli import describe_publish
from forkcast_lake.process_exit import exit_after
from forkcast_lake.settings import LakeSettings
from forkcast_lake.storage import is_remote
from forkcast_registry.errors import RegistryError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forkcast-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        help="draw the dataset into a directory",
        description="Draw users, restaurants, train/test clicks and requests (SPEC §2) into --out, with "
        "dataset.json written last. Rerunning with the same options resumes an interrupted run or does "
        "nothing if the dataset is complete.",
    )
    gen.add_argument("--preset", default="tiny", help=f"size preset: {', '.join(PRESETS)} (default: tiny)")
    gen.add_argument(
        "--out",
        required=True,
        help="output directory (created if missing), or s3://bucket/prefix to publish the dataset to the lake",
    )
    gen.add_argument(
        "--seed", type=int, default=7, help="seed of the whole process (default: 7, the original)"
    )
    gen.add_argument(
        "--drift",
        type=float,
        default=0.0,
        metavar="S",
        help="move every cluster centre by S times a centre-sized random offset (0 = the original data)",
    )
    for flag, field in [
        ("--users", "users"),
        ("--restaurants", "restaurants"),
        ("--train-files", "train_files"),
        ("--test-files", "test_files"),
        ("--rows-per-file", "rows_per_file"),
        ("--requests", "requests"),
    ]:
        gen.add_argument(flag, type=int, dest=field, help=f"override the preset's {field.replace('_', ' ')}")
    gen.add_argument("--force", action="store_true", help="replace whatever dataset --out already holds")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in CI logs)")

    pub = sub.add_parser(
        "publish",
        help="upload a finished dataset directory to the lake as a new snapshot",
        description="Publish DIR (with dataset.json) as Delta tables under --to. Publishing the dataset the "
        "prefix already holds adds no version and says so.",
    )
    pub.add_argument("dir", type=Path, help="dataset directory (holds dataset.json)")
    pub.add_argument("--to", required=True, help="s3://bucket/prefix of the dataset in the lake")

    desc = sub.add_parser("describe", help="print the summary of a generated dataset")
    desc.add_argument("data", type=Path, help="dataset directory (holds dataset.json)")
    return parser


def _generate(args: argparse.Namespace) -> None:
    base = preset_sizes(args.preset)
    overrides = {
        k: getattr(args, k)
        for k in ("users", "restaurants", "train_files", "test_files", "rows_per_file", "requests")
        if getattr(args, k) is not None
    }
    try:
        sizes = base.model_validate(base.model_dump() | overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    if args.drift < 0:
        raise ValueError("--drift must be >= 0")
    remote = is_remote(args.out)
    # An s3:// --out is drawn into a staging folder named for the URI, so a rerun resumes an interrupted draw.
    out = (
        LakeSettings().dataset_cache / "staging" / hashlib.sha256(args.out.encode()).hexdigest()[:16]
        if remote
        else Path(args.out)
    )
    manifest = generate(
        GenerateRequest(
            out=out,
            preset=args.preset,
            sizes=sizes,
            seed=args.seed,
            drift=args.drift,
            force=args.force,
            progress=not args.no_progress,
        )
    )
    print(f"fingerprint {manifest.fingerprint}")
    if remote:
        print(describe_publish(publish(out, args.out)))
        shutil.rmtree(out)


def _publish(args: argparse.Namespace) -> None:
    if not is_remote(args.to):
        raise ValueError(f"--to {args.to!r} is not an s3://bucket/prefix URI")
    print(describe_publish(publish(args.dir, args.to)))


def _describe(args: argparse.Namespace) -> None:
    m = read_manifest(args.data)
    s = m.sizes
    total_bytes = sum(f.bytes for f in m.files)
    print(f"dataset      {args.data}  (preset {m.preset}, seed {m.seed}, drift {m.drift})")
    print(f"users        {s.users:,}   restaurants {s.restaurants:,}")
    print(f"train rows   {m.rows('train/'):,} in {s.train_files} files   test rows {m.rows('test/'):,}")
    print(f"requests     {s.requests:,} x {s.candidates:,} candidates")
    print("click rate   " + "   ".join(f"{k} {v:.4f}" for k, v in m.click_rate.items()))
    print(f"size         {total_bytes / 1e6:,.1f} MB in {len(m.files)} files")
    print(f"fingerprint  {m.fingerprint}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            _generate(args)
        elif args.command == "publish":
            _publish(args)
        else:
            _describe(args)
    except (GenerateError, ValueError, FileNotFoundError, LakeDataError, RegistryError) as exc:
        print(f"forkcast-data: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except KeyboardInterrupt:
        print("forkcast-data: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def run() -> NoReturn:
    """The console script: :func:`main`, then exit without finalizing delta-rs (forkcast_lake.process_exit)."""
    exit_after(main)


if __name__ == "__main__":
    run()

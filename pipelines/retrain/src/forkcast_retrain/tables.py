"""Reading parquet inputs with their schema checked, and mapping entity ids to table rows.

Everything the trainer reads goes through here, so a wrong column, a wrong dtype, an empty file or an unknown
id stops the run with a message naming the file, instead of training a silently wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from forkcast_retrain.errors import DataError

I64 = npt.NDArray[np.int64]

# Ids are looked up in a dense array when it stays within this factor of the table size (plus a constant), and
# by binary search otherwise, so sparse real-world ids (e.g. 64-bit hashes) work without a huge lookup table.
_DENSE_FACTOR = 4
_DENSE_SLACK = 1_000_000


def read_checked(path: Path, columns: dict[str, str]) -> pl.DataFrame:
    """Read ``path`` and check that it has exactly ``columns`` (name -> polars dtype name) and some rows."""
    if not path.is_file():
        raise DataError(f"missing input file {path}")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file; all mean the same here
        raise DataError(f"cannot read {path}: {exc}") from exc
    found = {name: str(dtype) for name, dtype in frame.schema.items()}
    if found != columns:
        raise DataError(f"{path}: schema mismatch: expected {columns}, found {found}")
    if frame.height == 0:
        raise DataError(f"{path} has no rows")
    return frame


@dataclass(frozen=True)
class IdIndex:
    """Maps entity ids (as stored in the click files) to rows of a feature table.

    ``mode`` is ``identity`` when the ids are exactly 0..N-1 in order (the generator's layout: no lookup at all),
    ``dense`` (a lookup array, -1 for holes) or ``sorted`` (binary search over the sorted ids).
    """

    name: str
    mode: str
    table: I64  # dense: id -> row or -1; sorted: the sorted ids; identity: empty
    order: I64  # sorted: row of each sorted id; otherwise empty
    size: int

    @classmethod
    def build(cls, name: str, ids: I64) -> IdIndex:
        n = len(ids)
        if n and ids[0] == 0 and ids[-1] == n - 1 and np.array_equal(ids, np.arange(n, dtype=np.int64)):
            return cls(name, "identity", np.empty(0, np.int64), np.empty(0, np.int64), n)
        if len(np.unique(ids)) != n:
            raise DataError(f"{name}: duplicate ids in the feature table")
        lo, hi = int(ids.min()), int(ids.max())
        if lo >= 0 and hi < _DENSE_FACTOR * n + _DENSE_SLACK:
            table = np.full(hi + 1, -1, dtype=np.int64)
            table[ids] = np.arange(n, dtype=np.int64)
            return cls(name, "dense", table, np.empty(0, np.int64), n)
        order = np.argsort(ids, kind="stable").astype(np.int64)
        return cls(name, "sorted", ids[order], order, n)

    def rows(self, ids: I64, source: str) -> I64:
        """Rows for ``ids``; raises naming ``source`` and an example when an id is not in the table."""
        if self.mode == "identity":
            bad = (ids < 0) | (ids >= self.size)
            rows = ids
        elif self.mode == "dense":
            inside = (ids >= 0) & (ids < len(self.table))
            rows = np.where(inside, self.table[np.where(inside, ids, 0)], -1)
            bad = rows < 0
        else:
            pos = np.searchsorted(self.table, ids).clip(max=len(self.table) - 1)
            bad = self.table[pos] != ids
            rows = self.order[pos]
        if bad.any():
            example = int(ids[np.flatnonzero(bad)[0]])
            raise DataError(
                f"{source}: {int(bad.sum()):,} {self.name} ids are not in the feature table (e.g. {example})"
            )
        return rows

    def save(self, path: Path) -> None:
        """Write the index as ``.npz`` (see ``load``)."""
        meta = np.array([("identity", "dense", "sorted").index(self.mode), self.size], dtype=np.int64)
        np.savez(path, meta=meta, table=self.table, order=self.order)

    @classmethod
    def load(cls, name: str, path: Path) -> IdIndex:
        arrays = np.load(path)
        mode = ("identity", "dense", "sorted")[int(arrays["meta"][0])]
        return cls(name, mode, arrays["table"], arrays["order"], int(arrays["meta"][1]))

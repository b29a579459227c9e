"""Writing and reading event tables: ROOT (`events` TTree + JSON metadata) and parquet.

Every writer goes to a temporary name beside the target and renames it at the end, so an
interrupted or failed write never leaves a partial file under the target's name.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from lit_vae.errors import DataError, OutputError

TREE = "events"
METADATA_KEY = "metadata"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside target; rename it to target only if the block succeeds."""
    target = Path(target)
    if not target.parent.exists():
        raise OutputError(f"{target}: directory {target.parent} does not exist; create it or choose another --out")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: directory {target.parent} is not writable; choose another --out")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_columns(columns: Mapping[str, np.ndarray]) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"columns have different lengths: {lengths}")


def write_root(path: str | os.PathLike, columns: Mapping[str, np.ndarray], metadata: Mapping) -> Path:
    """Write columns as the flat TTree `events` and metadata as a JSON TObjString, atomically."""
    import uproot

    _check_columns(columns)
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp, compression=uproot.ZSTD(5)) as out:
            out[TREE] = {name: np.ascontiguousarray(values) for name, values in columns.items()}
            out[METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=_json_default)
    return Path(path)


def read_root_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata stored beside the `events` tree."""
    import uproot

    with uproot.open(path) as f:
        if METADATA_KEY not in f:
            raise DataError(f"{path}: no '{METADATA_KEY}' object; was it written by lit-vae?")
        return json.loads(str(f[METADATA_KEY]))


def read_root(path: str | os.PathLike, branches: list[str] | None = None) -> dict[str, np.ndarray]:
    """All (or the named) branches of the `events` tree as numpy arrays."""
    import uproot

    with uproot.open(path) as f:
        if TREE not in f:
            raise DataError(f"{path}: no '{TREE}' tree; found {sorted(f.keys(cycle=False))}")
        return f[TREE].arrays(branches, library="np")


def write_parquet(path: str | os.PathLike, columns: Mapping[str, np.ndarray], metadata: Mapping) -> Path:
    """Write columns as parquet (zstd, no dictionary encoding) with metadata under b'lit_vae'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_columns(columns)
    table = pa.table({name: np.asarray(values) for name, values in columns.items()})
    table = table.replace_schema_metadata({b"lit_vae": json.dumps(metadata, default=_json_default).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
    return Path(path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in metadata")

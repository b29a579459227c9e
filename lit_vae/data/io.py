"""Reading and writing event tables: ROOT (`events` TTree + JSON metadata) and parquet.

Every writer goes to a temporary name beside the target and renames it at the end, so an
interrupted or failed write never leaves a partial file under the target's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lit_vae.data.manifest import Manifest, check_files_exist, check_inputs
from lit_vae.data.selection import evaluate_cut
from lit_vae.errors import DataError, OutputError

TREE = "events"
METADATA_KEY = "metadata"


def check_writable(target: str | os.PathLike) -> Path:
    """target, if its directory exists and is writable (checked before any work, and again when writing)."""
    target = Path(target)
    if not target.parent.exists():
        raise OutputError(f"{target}: directory {target.parent} does not exist; create it or choose another --out")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: directory {target.parent} is not writable; choose another --out")
    return target


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside target; rename it to target only if the block succeeds. Temporary
    files that killed writers (kill -9 leaves no chance to clean up) left for this target are removed."""
    target = check_writable(target)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if not _alive(stale.suffixes[-2].lstrip(".")):
            stale.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _alive(pid: str) -> bool:
    """Whether a process with this id (the middle of a temporary file's name) still runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


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


def read_events(path: str | os.PathLike, need_metadata: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Columns and lit-vae metadata of an output file (.parquet or ROOT `events` tree): scores or events.
    need_metadata=False also reads ntuples lit-vae did not write (metadata {})."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a file written by `lit-vae predict` or `lit-vae generate`")
    if path.suffix == ".root":
        import uproot

        with uproot.open(path) as f:
            has_metadata = METADATA_KEY in f
        return read_root(path), read_root_metadata(path) if has_metadata or need_metadata else {}
    if path.suffix != ".parquet":
        raise DataError(f"{path}: expected a .parquet or .root file")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:
        raise DataError(f"{path}: cannot be read as parquet ({type(err).__name__}); is it truncated?") from None
    metadata = json.loads((pq.read_metadata(path).metadata or {}).get(b"lit_vae", b"{}"))
    return {name: table.column(name).to_numpy() for name in table.column_names}, metadata


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


# --- Reading a region of a manifest into one table ---------------------------------------------------

CACHE_FORMAT = 2  # bump when the cached table's layout changes
# A truth-tagged sample (lit_vae.mc) holds several rows per event, one per b-tag configuration; this branch
# tells them apart (rows of one event share its id; other samples read as configuration 0).
CONFIGURATION = "tag_config"
STEP_SIZE = 200_000  # entries per uproot chunk: bounded memory whatever the file size


def cache_key(manifest: Manifest, region: str, features: list[str]) -> str:
    """Hash of what determines the selected table: manifest text, region, features, input files."""
    h = hashlib.sha256()
    h.update(f"{CACHE_FORMAT}|{manifest.content_hash}|{region}|{','.join(features)}".encode())
    for sample in manifest.samples.values():
        for file in sample.files:
            stat = file.stat()
            h.update(f"|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _iterate_file(file: Path, tree: str, branches: list[str], step_size: int, bar) -> Iterator[dict]:
    """Chunks of the needed branches of one ROOT or parquet file, as dicts of numpy arrays."""
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(file).iter_batches(batch_size=step_size, columns=branches):
            bar.update(batch.num_rows)
            yield {name: np.array(batch.column(name).to_numpy(zero_copy_only=False)) for name in branches}
        return
    import uproot

    try:
        for chunk in uproot.iterate({str(file): tree}, branches, step_size=step_size, library="np"):
            bar.update(len(chunk[branches[0]]))
            yield chunk
    except Exception as err:  # uproot raises many types for truncated or corrupt baskets
        raise DataError(f"{file}: cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                        "is it truncated? regenerate it with `make samples`") from None


def read_region(manifest: Manifest, region: str, features: list[str], *, nan_policy: str = "drop",
                step_size: int = STEP_SIZE, cache_dir: str | os.PathLike | None = ".cache/lit-vae"):
    """The selected events of region for every sample: a pandas DataFrame with the features, `weight`,
    `event_id`, `configuration` (the row of a truth-tagged event, else 0), `sample` and `is_signal`, read
    from the parquet cache when the inputs are unchanged."""
    import pandas as pd

    if nan_policy not in ("drop", "raise"):
        raise DataError(f"nan_policy must be 'drop' or 'raise', got '{nan_policy}'")
    cut = manifest.region_cut(region)
    check_files_exist(manifest)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{manifest.path.stem}-{region}-{cache_key(manifest, region, features)}.parquet"
        if cache_file.exists():
            return _with_sample_categories(pd.read_parquet(cache_file), manifest)
    contents = check_inputs(manifest, region, features)  # (sample, file) -> (entries, branch names)
    total = sum(entries for entries, _ in contents.values())
    frames = []
    with tqdm(total=total, unit="evt", desc=f"reading {manifest.path.stem}/{region}", delay=2.0,
              file=sys.stderr) as bar:
        for sample in manifest.samples.values():
            branches = manifest.branches(region, features, sample)
            parts = []
            offset = 0  # synthesised ids count on across the files of a sample: unique within it
            for file in sample.files:
                configured = CONFIGURATION in contents[sample.name, file][1]
                needed = [*branches, CONFIGURATION] if configured and CONFIGURATION not in branches else branches
                for chunk in _iterate_file(file, sample.tree, needed, step_size, bar):
                    n = len(chunk[branches[0]])
                    mask = evaluate_cut(cut, chunk, manifest.objects)
                    part = {name: manifest.column(name, chunk)[mask] for name in features}
                    part["weight"] = chunk[sample.weight][mask] if sample.weight else np.ones(int(mask.sum()))
                    if not np.isfinite(part["weight"]).all():
                        raise DataError(f"{file}: {int((~np.isfinite(part['weight'])).sum())} selected events of "
                                        f"sample '{sample.name}' have a non-finite weight (branch '{sample.weight}'); "
                                        "fix or remove them in the ntuple")
                    ids = chunk[manifest.event_id] if manifest.event_id else offset + np.arange(n)
                    part["event_id"] = np.asarray(ids, dtype=np.uint64)[mask]
                    part["configuration"] = (np.asarray(chunk[CONFIGURATION], dtype=np.int32)[mask] if configured
                                             else np.zeros(int(mask.sum()), np.int32))
                    parts.append(pd.DataFrame(part))
                    offset += n
            frame = pd.concat(parts, ignore_index=True)
            if frame.empty:
                raise DataError(f"{manifest.path}: region '{region}' selects no events of sample '{sample.name}'; "
                                f"check the cut '{cut}' or the sample's files")
            frame["sample"] = pd.Categorical.from_codes(np.full(len(frame), list(manifest.samples).index(sample.name)),
                                                        categories=list(manifest.samples))
            frame["is_signal"] = sample.is_signal
            frames.append(_drop_non_finite(frame, features, nan_policy, f"sample '{sample.name}'"))
    table = _with_sample_categories(pd.concat(frames, ignore_index=True), manifest)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp:
            table.to_parquet(tmp, compression="zstd", use_dictionary=False)
    return table


def _with_sample_categories(table, manifest: Manifest):
    """The sample column as a categorical in the manifest's sample order (fresh and cached alike)."""
    import pandas as pd

    names = list(manifest.samples)
    column = table["sample"]
    if isinstance(column.dtype, pd.CategoricalDtype) and list(column.cat.categories) == names:
        return table
    table["sample"] = pd.Categorical(column.astype(str), categories=names)
    return table


def _drop_non_finite(frame, features: list[str], policy: str, where: str):
    """Drop (and warn about) or refuse events with NaN or inf in a feature."""
    bad = np.column_stack([~np.isfinite(frame[name].to_numpy()) for name in features])  # booleans: cheap
    if not bad.any():
        return frame
    counts = {name: int(n) for name, n in zip(features, bad.sum(axis=0), strict=True) if n}
    message = f"{where}: non-finite values in {counts} (feature: events)"
    if policy == "raise":
        raise DataError(f"{message}; fix the input or use nan_policy='drop'")
    if bad.any(axis=1).all():
        raise DataError(f"{message}: every selected event has one, nothing would be left; fix the input")
    warnings.warn(f"{message}; dropped {int(bad.any(axis=1).sum())} events", stacklevel=3)
    return frame[~bad.any(axis=1)].reset_index(drop=True)


# --- Streaming writer for outputs (scores, generated events) -------------------------------------------

COMPRESSIONS = ("zstd", "lz4", "snappy", "gzip", "none")  # snappy is parquet's only; gzip is ROOT's ZLIB


class EventWriter:
    """Append column batches to a .parquet file or a ROOT `events` tree, atomically.

    Use as a context manager: the file appears under its name only when the block ends without error.
    The metadata is written when the block ends, so it may be completed while writing (`metadata.update`).
    With background=True, a thread compresses and writes while the caller produces the next batch (at most
    two batches wait); an error in the thread surfaces at the next append or at the end.
    """

    def __init__(self, path: str | os.PathLike, metadata: Mapping, compression: str = "zstd",
                 background: bool = False):
        self.path = Path(path)
        if self.path.suffix not in (".parquet", ".root"):
            raise OutputError(f"{self.path}: the output must end in .parquet or .root")
        if compression not in COMPRESSIONS or (compression == "snappy" and self.path.suffix == ".root"):
            known = [c for c in COMPRESSIONS if self.path.suffix == ".parquet" or c != "snappy"]
            raise OutputError(f"{self.path}: compression '{compression}' is not one of {', '.join(known)}")
        self.metadata, self.compression, self.background = dict(metadata), compression, background
        self._atomic = atomic_path(self.path)
        self._writer = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> EventWriter:
        self._tmp = self._atomic.__enter__()
        if self.background:
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._drain, name="lit-vae-writer", daemon=True)
            self._thread.start()
        return self

    def append(self, columns: Mapping[str, np.ndarray]) -> None:
        _check_columns(columns)
        if self._queue is None:
            self._write(columns)
            return
        if self._error is not None:
            raise self._error
        self._queue.put(dict(columns))

    def _drain(self) -> None:
        while (columns := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(columns)
                except BaseException as err:  # reported to the producer
                    self._error = err

    def _write(self, columns: Mapping[str, np.ndarray]) -> None:
        if self.path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({name: np.asarray(values) for name, values in columns.items()})
            if self._writer is None:
                codec = None if self.compression == "none" else self.compression
                self._writer = pq.ParquetWriter(self._tmp, table.schema, compression=codec, use_dictionary=False)
            self._writer.write_table(table.cast(self._writer.schema))
        else:
            import uproot

            if self._writer is None:
                codec = {"zstd": uproot.ZSTD(5), "lz4": uproot.LZ4(1), "gzip": uproot.ZLIB(4), "none": None}
                self._writer = uproot.recreate(self._tmp, compression=codec[self.compression])
                self._writer.mktree(TREE, {name: np.asarray(v).dtype for name, v in columns.items()})
            self._writer[TREE].extend({name: np.ascontiguousarray(v) for name, v in columns.items()})

    def __exit__(self, exc_type, exc, tb) -> bool:
        own = None  # an error found here, not raised by the block: raised after the clean-up
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            if self._error is not None and exc_type is None:  # the block ended well, the writing did not
                own = self._error
        if self._writer is not None:
            if exc_type is None and own is None:
                text = json.dumps(self.metadata, sort_keys=True, default=_json_default)
                if self.path.suffix == ".parquet":
                    self._writer.add_key_value_metadata({"lit_vae": text})
                else:
                    self._writer[METADATA_KEY] = text
            self._writer.close()
        elif exc_type is None and own is None:  # nothing was appended: an error, and no file
            own = DataError(f"{self.path}: no events to write")
        if own is not None:
            exc_type, exc = type(own), own
        handled = self._atomic.__exit__(exc_type, exc, tb)  # renames, or removes the temporary file
        if own is not None:
            raise own
        return handled

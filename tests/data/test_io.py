"""ROOT and parquet writers: round trips, metadata, no dictionary encoding, atomic writes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from lit_vae.data.io import EventWriter, read_events, read_root, read_root_metadata, write_parquet, write_root
from lit_vae.errors import DataError, OutputError


def columns():
    rng = np.random.default_rng(0)
    return {"met": rng.exponential(100, 1000).astype(np.float32), "njet30": rng.integers(0, 5, 1000).astype(np.int32),
            "event_number": np.arange(1000, dtype=np.uint64) << np.uint64(40)}


def test_root_round_trip(tmp_path):
    path = write_root(tmp_path / "a.root", columns(), {"process": "test", "sigma_pb": np.float64(1.5)})
    back = read_root(path)
    for name, values in columns().items():
        np.testing.assert_array_equal(back[name], values)
        assert back[name].dtype == values.dtype
    assert read_root_metadata(path) == {"process": "test", "sigma_pb": 1.5}


def test_parquet_round_trip_without_dictionary(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", columns(), {"seed": 3})
    table = pq.read_table(path)
    np.testing.assert_array_equal(table["met"].to_numpy(), columns()["met"])
    assert table.schema.metadata[b"lit_vae"] == b'{"seed": 3}'
    meta = pq.ParquetFile(path).metadata
    for i in range(meta.num_columns):
        assert "PLAIN_DICTIONARY" not in str(meta.row_group(0).column(i).encodings)
        assert "RLE_DICTIONARY" not in str(meta.row_group(0).column(i).encodings)


def test_failed_write_leaves_no_file(tmp_path):
    bad = {**columns(), "label": np.array(["a"] * 1000, dtype=object)}  # uproot cannot write objects
    with pytest.raises(TypeError, match="object dtypes"):
        write_root(tmp_path / "b.root", bad, {})
    assert not list(tmp_path.iterdir())


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    target = write_root(tmp_path / "c.root", columns(), {"version": 1})
    bad = {**columns(), "label": np.array(["a"] * 1000, dtype=object)}
    with pytest.raises(TypeError, match="object dtypes"):
        write_root(target, bad, {"version": 2})
    assert read_root_metadata(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.root"]


@pytest.mark.parametrize("suffix", [".parquet", ".root"])
def test_a_writer_killed_midway_leaves_the_previous_file(tmp_path, suffix):
    """kill -9 in the middle of a write (one batch appended): the previous file stays whole; the dead
    writer's temporary file is removed by the next write."""
    target = tmp_path / f"events{suffix}"
    with EventWriter(target, {"version": 1}) as writer:
        writer.append(columns())
    script = (f"import os, signal, numpy as np\nfrom lit_vae.data.io import EventWriter\n"
              f"with EventWriter({str(target)!r}, {{'version': 2}}) as writer:\n"
              f"    writer.append({{'met': np.arange(5000, dtype=np.float32)}})\n"
              f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    table, metadata = read_events(target)
    assert metadata["version"] == 1 and len(table["met"]) == 1000
    assert len(list(tmp_path.glob(f".events{suffix}.*.tmp"))) == 1  # what kill -9 leaves
    with EventWriter(target, {"version": 3}) as writer:
        writer.append(columns())
    assert [p.name for p in tmp_path.iterdir()] == [target.name] and read_events(target)[1]["version"] == 3


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match="different lengths"):
        write_root(tmp_path / "d.root", {"a": np.zeros(3), "b": np.zeros(4)}, {})
    with pytest.raises(OutputError, match="does not exist"):
        write_root(tmp_path / "missing" / "d.root", columns(), {})
    with pytest.raises(DataError, match="no 'metadata' object"):
        import uproot

        with uproot.recreate(tmp_path / "plain.root") as f:
            f["events"] = {"a": np.zeros(3)}
        read_root_metadata(tmp_path / "plain.root")


@pytest.mark.parametrize("suffix, compression", [(".parquet", "zstd"), (".parquet", "snappy"), (".parquet", "none"),
                                                 (".root", "lz4"), (".root", "gzip"), (".root", "none")])
def test_a_background_writer_writes_what_a_plain_one_does(tmp_path, suffix, compression):
    """The writer thread (generate overlaps sampling and writing) gives the same table, in every compression."""
    batches = [{k: v[i::3] for k, v in columns().items()} for i in range(3)]
    files = []
    for background in (False, True):
        with EventWriter(tmp_path / f"{background}{suffix}", {"n": 3}, compression, background=background) as w:
            for batch in batches:
                w.append(batch)
        files.append(read_events(tmp_path / f"{background}{suffix}"))
    for name in columns():
        np.testing.assert_array_equal(files[0][0][name], files[1][0][name])
    assert files[0][1] == files[1][1] == {"n": 3}


def test_a_failure_in_the_writer_thread_surfaces_and_leaves_no_file(tmp_path):
    target = tmp_path / "events.root"
    with pytest.raises(TypeError, match="dtype object"):
        with EventWriter(target, {}, background=True) as writer:
            writer.append({**columns(), "label": np.array(["a"] * 1000, dtype=object)})  # uproot refuses objects
    assert not list(tmp_path.iterdir())
    with pytest.raises(OutputError, match="compression 'brotli' is not one of zstd, lz4, gzip, none"):
        EventWriter(target, {}, "brotli")
    with pytest.raises(DataError, match="no events to write"):
        with EventWriter(tmp_path / "empty.parquet", {}):
            pass
    assert not list(tmp_path.iterdir())

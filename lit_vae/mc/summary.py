"""`python -m lit_vae.mc.summary FILE.root ...`: a markdown table of samples from their metadata.

It gives the README's sample table and BENCHMARKS.md's Monte Carlo reference (selected events per
CPU-second, CPU-hours per 10^6 selected events) from what the files themselves record.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lit_vae.data.io import read_root_metadata

HEADER = (
    "| file | process | events | sigma (pb) | sigma x eff (pb) | efficiency | MPI | truth-tag "
    "| selected / CPU-s | CPU-h per 10^6 |\n|---|---|---|---|---|---|---|---|---|---|"
)


def row(path: str | Path) -> str:
    """One markdown table row for the sample at path."""
    m = read_root_metadata(path)
    rate = m["selected_per_cpu_second"]
    rows = f" ({m['rows']:,} rows)" if m.get("rows", m["events_selected"]) != m["events_selected"] else ""
    return (
        f"| `{Path(path).name}` | {m['description']} | {m['events_selected']:,}{rows} | {m['sigma_pb']:.4g} "
        f"| {m['sum_weights_pb']:.4g} | {m['selection_efficiency']:.4f} | {'on' if m['mpi'] else 'off'} "
        f"| {'yes' if m['truth_tagging'] else 'no'} | {rate:.1f} | {1e6 / rate / 3600:.1f} |"
    )


def table(paths: list[str]) -> str:
    """The markdown table for the given samples."""
    return "\n".join([HEADER, *(row(p) for p in paths)])


if __name__ == "__main__":
    print(table(sys.argv[1:]))

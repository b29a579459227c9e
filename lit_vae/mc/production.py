"""Sample production: Pythia batches -> detector reconstruction -> selection -> one ROOT file.

The request is cut into chunks of at most CHUNK_EVENTS selected events; each chunk is one Pythia
instance seeded from (seed, chunk), so the file depends on the seed and not on how many processes
(--jobs) share the chunks. The main process shows a progress bar (selected events per second), merges
the chunks, computes the event weights (sigma x efficiency / generated events, in pb) and writes the
file atomically with its metadata.

For a batch system, `--chunk i/N` runs only the chunks c with c % N == i and writes them unweighted with
each chunk's cross-section and counts (a part); `merge` joins the N parts into the file one process would
have written (the same columns and weights). `merge` also joins finished samples of one process and
settings made with different seeds (a larger sample from runs done at different times): their events
side by side, weighted by the cross-section averaged over the events each run generated.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

import lit_vae
from lit_vae.data.io import write_root
from lit_vae.errors import ConfigError
from lit_vae.mc import analyses
from lit_vae.mc.detector import DETECTOR
from lit_vae.mc.processes import BEAM_SETTINGS, FAST_SETTINGS, Process, build_process, make_process_veto
from lit_vae.mc.reconstruction import reconstruct

MB_TO_PB = 1e9
CHUNK_EVENTS = 5000
MAX_CHUNKS = 1 << 16  # chunks one seed's event ids can tell apart
INDEX_BITS = 28  # generated events per chunk an event id can count
STOP = threading.Event()  # set by SIGINT/SIGTERM; checked between batches


def stop_on_signals() -> None:
    """Turn SIGINT and SIGTERM into a stop request checked between batches. A KeyboardInterrupt raised
    while Pythia runs the Python veto hook would be swallowed by nextBatch's error handling."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: STOP.set())
PYTHIA_SEED_MAX = 900_000_000


@dataclass(frozen=True)
class Request:
    """What to produce: the command-line options of `python -m lit_vae.mc`."""

    process: str
    events: int
    out: str
    seed: int = 1
    jobs: int = 1
    fast: bool = False
    truth_tag: bool | None = None  # None: the process's default (on for wjets)
    tag_floor: float = analyses.TAG_FLOOR  # truth-tag rows below this probability are thinned (0: keep all)
    veto: bool = True  # the process-level veto; off only to validate that it changes nothing selected
    mass: float = 150.0
    mass_c1n2: float = 500.0
    mass_lsp: float = 100.0
    batch_size: int = 400
    chunk_events: int = CHUNK_EVENTS
    extra_settings: tuple[str, ...] = field(default_factory=tuple)
    part: tuple[int, int] = (0, 1)  # (i, N): run the chunks c with c % N == i (a batch-system array task)


@dataclass
class JobResult:
    chunk: int
    columns: dict[str, np.ndarray]
    weight_factor: np.ndarray
    events_generated: int  # up to and including the last kept selected event
    sigma_mb: float
    sigma_err_mb: float
    accepted: int
    cpu_seconds: float
    settings: list[str]


def pythia_seed(seed: int, chunk: int) -> int:
    """A Pythia seed (1 ... 9e8) derived from the user's seed and the chunk index."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0] % PYTHIA_SEED_MAX) + 1


def event_numbers(seed: int, chunk: int, generated_index: np.ndarray) -> np.ndarray:
    """Unique uint64 ids: 20 bits of seed, 16 of chunk (up to 65,536 chunks, an array job of 10^4 tasks) and 28
    of the generated-event index. The chunk's low 12 bits sit above the index and its high 4 bits in the index's
    top, so that samples made before the chunk field was widened (12 bits, 32-bit index) keep their ids."""
    if chunk > MAX_CHUNKS - 1:
        raise ConfigError(f"chunk {chunk}: an event id holds at most {MAX_CHUNKS} chunks; raise --chunk-events")
    if len(generated_index) and int(generated_index.max()) >> INDEX_BITS:
        raise ConfigError(f"chunk {chunk} generated more than 2^{INDEX_BITS} events, more than an event id holds; "
                          "lower --chunk-events")
    head = np.uint64(((seed & 0xFFFFF) << 44) | ((chunk & 0xFFF) << 32) | ((chunk >> 12) << INDEX_BITS))
    return head | generated_index.astype(np.uint64)


def chunk_quotas(events: int, size: int) -> list[int]:
    """Selected events per chunk: full chunks of size and one remainder."""
    return [size] * (events // size) + ([events % size] if events % size else [])


def pythia_settings(request: Request, process: Process, chunk: int) -> list[str]:
    """Every Pythia setting of one chunk, in the order they are read."""
    return [
        *BEAM_SETTINGS, *process.settings, *(FAST_SETTINGS if request.fast else []),
        *request.extra_settings, "Random:setSeed = on", f"Random:seed = {pythia_seed(request.seed, chunk)}",
    ]


def configured_pythia(settings: list[str]):
    """A Pythia instance that has read settings; a rejected setting is a ConfigError naming it."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for line in settings:
        if not pythia.readString(line):
            raise ConfigError(f"Pythia rejected the setting '{line}'; check its spelling in the Pythia manual")
    return pythia


def run_chunk(request: Request, chunk: int, quota: int, progress=None) -> JobResult:
    """Generate until quota events pass the selection; progress(selected, generated) after each batch."""
    import pythia8mc

    start = time.process_time()
    with tempfile.TemporaryDirectory(prefix="lit_vae_mc_") as workdir:
        process = build_process(
            request.process, mass=request.mass, mass_c1n2=request.mass_c1n2,
            mass_lsp=request.mass_lsp, workdir=Path(workdir),
        )
        truth_tagging = process.truth_tag_default if request.truth_tag is None else request.truth_tag
        settings = pythia_settings(request, process, chunk)
        pythia = configured_pythia(settings)
        hook = make_process_veto(pythia8mc, process) if request.veto else None  # kept referenced
        if hook is not None:
            pythia.setUserHooksPtr(hook)
        if not pythia.init():
            raise ConfigError(f"Pythia failed to initialise {request.process}; check the --set options")

        rng = np.random.default_rng([request.seed, chunk])
        chunks, factors, indices = [], [], []
        selected = generated = 0
        while selected < quota:
            if STOP.is_set():
                raise KeyboardInterrupt
            if generated >> INDEX_BITS:  # refused now, not after the chunk's CPU time is spent
                raise ConfigError(f"chunk {chunk} generated 2^{INDEX_BITS} events, more than an event id holds; "
                                  "lower --chunk-events")
            batch = pythia.nextBatch(request.batch_size)
            objects = reconstruct(batch.prt, rng, DETECTOR)
            if process.analysis == "zgamma":
                mask, columns = analyses.zgamma_columns(objects, rng, DETECTOR)
                rows, factor = np.flatnonzero(mask), np.ones(int(mask.sum()))
            else:
                rows, columns, factor = analyses.one_lepton_columns(
                    objects, rng, DETECTOR, truth_tagging=truth_tagging, tag_floor=request.tag_floor
                )
            chunks.append(columns)
            factors.append(factor)
            indices.append(generated + rows)
            events = len(np.unique(rows))
            selected += events
            generated += len(batch.prt)
            if progress is not None:
                progress(events, len(batch.prt))
        info = pythia.infoPython()
        sigma, sigma_err, accepted = info.sigmaGen(), info.sigmaErr(), info.nAccepted()
        del hook

    index = np.concatenate(indices)
    keep = index <= np.unique(index)[quota - 1] if quota else index < 0  # the first quota events, all their rows
    columns = {k: np.concatenate([c[k] for c in chunks])[keep] for k in chunks[0]}
    index = index[keep]
    columns["event_number"] = event_numbers(request.seed, chunk, index)
    return JobResult(
        chunk=chunk,
        columns=columns,
        weight_factor=np.concatenate(factors)[keep],
        events_generated=int(index[-1]) + 1 if quota else 0,
        sigma_mb=sigma,
        sigma_err_mb=sigma_err,
        accepted=accepted,
        cpu_seconds=time.process_time() - start,
        settings=settings,
    )


def _worker(request: Request, chunk: int, quota: int, updates) -> JobResult:
    return run_chunk(request, chunk, quota, progress=lambda s, g: updates.put((s, g)))


def run_chunks(request: Request) -> list[JobResult]:
    """Run the request's chunks of its part (on request.jobs processes when more than one) under one
    progress bar."""
    index, parts = request.part
    quotas = {c: q for c, q in enumerate(chunk_quotas(request.events, request.chunk_events)) if c % parts == index}
    bar = tqdm(total=sum(quotas.values()), unit="evt", desc=request.process, file=sys.stderr, smoothing=0.1)
    counts = {"generated": 0}

    def update(selected: int, generated: int) -> None:
        counts["generated"] += generated
        bar.update(min(selected, bar.total - bar.n))
        bar.set_postfix(generated=counts["generated"], eff=f"{bar.n / max(counts['generated'], 1):.3f}")

    try:
        if request.jobs == 1 or len(quotas) == 1:
            return [run_chunk(request, c, q, progress=update) for c, q in quotas.items()]
        context = mp.get_context("spawn")
        with context.Manager() as manager, context.Pool(min(request.jobs, len(quotas))) as pool:
            updates = manager.Queue()
            pending = [pool.apply_async(_worker, (request, c, q, updates)) for c, q in quotas.items()]
            while not all(p.ready() for p in pending):
                if STOP.is_set():
                    pool.terminate()
                    raise KeyboardInterrupt
                try:
                    update(*updates.get(timeout=0.5))
                except queue.Empty:
                    pass
            while not updates.empty():
                update(*updates.get())
            return [p.get() for p in pending]
    finally:
        bar.close()


def produce(request: Request) -> dict:
    """Produce the sample (or the request's part of it), write request.out atomically and return its
    metadata."""
    wall = time.time()
    with tempfile.TemporaryDirectory(prefix="lit_vae_mc_") as workdir:  # validates the options early
        process = build_process(request.process, mass=request.mass, mass_c1n2=request.mass_c1n2,
                                mass_lsp=request.mass_lsp, workdir=Path(workdir))
        configured_pythia(pythia_settings(request, process, 0))
    if len(chunk_quotas(request.events, request.chunk_events)) > MAX_CHUNKS:
        raise ConfigError(f"--events {request.events} needs more than {MAX_CHUNKS} chunks of --chunk-events "
                          f"{request.chunk_events}; raise --chunk-events")
    chunks = len(chunk_quotas(request.events, request.chunk_events))
    if request.part[1] > chunks:
        raise ConfigError(f"--chunk {request.part[0]}/{request.part[1]}: the request has only {chunks} chunks of "
                          f"--chunk-events {request.chunk_events}; use N <= {chunks} or smaller chunks")
    results = run_chunks(request)
    if request.part[1] > 1:
        return write_part(request, process, results)
    columns, metadata = assemble(request, process, results)
    metadata.update(command="python -m lit_vae.mc " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                    wall_seconds=time.time() - wall)
    write_root(request.out, columns, metadata)
    return metadata


def write_part(request: Request, process: Process, results: list[JobResult]) -> dict:
    """One part of a distributed request: its chunks' events, their weight factors and, per chunk, the
    cross-section and counts that `merge` needs to weight the whole sample."""
    columns = {k: np.concatenate([r.columns[k] for r in results]) for k in results[0].columns}
    columns["chunk"] = np.concatenate([np.full(len(r.weight_factor), r.chunk, np.int32) for r in results])
    columns["weight_factor"] = np.concatenate([r.weight_factor for r in results])
    metadata = {"lit_vae_part": list(request.part), "request": asdict(request), "process": request.process,
                "chunks": [{k: v for k, v in asdict(r).items() if k not in ("columns", "weight_factor")}
                           for r in results]}
    write_root(request.out, columns, metadata)
    return {**metadata, "events_selected": len(np.unique(columns["event_number"])),
            "cpu_seconds": sum(r.cpu_seconds for r in results)}


def merge(paths: list[str], out: str) -> dict:
    """Join the parts of one array job (`merge_parts`) or finished samples made with different seeds
    (`combine_samples`), whichever the files are; refuse a mixture of the two."""
    from lit_vae.data.io import read_root_metadata
    from lit_vae.errors import DataError

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(f"{', '.join(missing)}: no such file; give the samples or parts to merge")
    is_part = {path: "lit_vae_part" in read_root_metadata(path) for path in paths}
    if all(is_part.values()):
        return merge_parts(paths, out)
    if not any(is_part.values()):
        return combine_samples(paths, out)
    parts = ", ".join(p for p, part in is_part.items() if part)
    raise DataError(f"{parts}: parts of an array job (--chunk i/N) given with finished samples; merge the parts "
                    "first, then merge that file with the other samples")


def merge_parts(parts: list[str], out: str) -> dict:
    """Join the parts of one distributed request into the file a single process would have written;
    refuse parts of different requests, a part given twice or a missing one."""
    from lit_vae.data.io import read_root, read_root_metadata
    from lit_vae.errors import DataError

    results, requests, seen = [], set(), {}
    for path in parts:
        metadata = read_root_metadata(path)
        if "lit_vae_part" not in metadata:
            raise DataError(f"{path}: not a part written by `python -m lit_vae.mc ... --chunk i/N`")
        index, total = metadata["lit_vae_part"]
        if index in seen:
            raise DataError(f"{path}: part {index}/{total} is also {seen[index]}; give each part once")
        seen[index] = path
        request = {k: v for k, v in metadata["request"].items() if k not in ("out", "jobs")}
        requests.add(json.dumps({**request, "part": total}, sort_keys=True))
        columns = read_root(path)
        chunk = columns.pop("chunk")
        factor = columns.pop("weight_factor")
        for info in metadata["chunks"]:
            mine = chunk == info["chunk"]
            results.append(JobResult(columns={k: v[mine] for k, v in columns.items()}, weight_factor=factor[mine],
                                     **info))
    if len(requests) > 1:
        raise DataError(f"{', '.join(parts)}: parts of different requests (process, events, seed or settings "
                        "differ); merge the parts of one request")
    missing = sorted(set(range(total)) - set(seen))
    if missing:
        raise DataError(f"parts {missing} of {total} are missing; run `python -m lit_vae.mc ... --chunk i/{total}` "
                        "for each and merge them all")
    request = json.loads(requests.pop())
    request = Request(**{**request, "out": out, "part": (0, 1), "extra_settings": tuple(request["extra_settings"])})
    with tempfile.TemporaryDirectory(prefix="lit_vae_mc_") as workdir:
        process = build_process(request.process, mass=request.mass, mass_c1n2=request.mass_c1n2,
                                mass_lsp=request.mass_lsp, workdir=Path(workdir))
    columns, metadata = assemble(request, process, sorted(results, key=lambda r: r.chunk))
    metadata.update(command="python -m lit_vae.mc merge " + " ".join(shlex.quote(p) for p in parts), parts=total)
    write_root(out, columns, metadata)
    return metadata


# What two samples to combine must share (the physics); the rest (seed, size, chunking, jobs) changes only
# which events were drawn. Request options a file predates are not compared (their effect is in SAME_PHYSICS).
SAME_PHYSICS = ("process", "description", "analysis", "mpi", "truth_tagging", "truth_tag_floor",
                "veto_invisible_pt_min_gev", "veto_visible_eta_max", "pythia_version", "detector")
DRAW_ONLY = ("out", "jobs", "seed", "events", "part", "chunk_events", "batch_size")


def runs_of(metadata: dict, path: str) -> list[dict]:
    """The generator runs a finished sample is made of: itself, or those a `merge` of samples recorded."""
    if "samples" in metadata:
        return metadata["samples"]
    return [{"file": Path(path).name, **{k: metadata.get(k) for k in (
        "command", "request", "sigma_pb", "sigma_err_pb", "events_generated", "events_selected", "rows",
        "cpu_seconds", "wall_seconds", "lit_vae_version")}}]


def combine_samples(paths: list[str], out: str) -> dict:
    """Finished samples of one process and settings with different seeds -> one sample: the events side by
    side (in order of seed), sigma averaged over the samples weighted by their generated events, and each
    event's weight sigma x its weight factor / all generated events (so each file's weights are scaled by
    (sigma / sigma_i) x (generated_i / generated)); refuse other settings or events that occur twice.
    A merged sample can be merged again with new runs: the average does not depend on the grouping."""
    from lit_vae.data.io import read_root, read_root_metadata
    from lit_vae.errors import DataError

    if len(set(map(str, paths))) < len(paths):
        raise DataError(f"{', '.join(paths)}: a sample is given twice; give each once")
    inputs = sorted(((read_root_metadata(p), p) for p in paths),
                    key=lambda mp: min(run["request"]["seed"] for run in runs_of(*mp)))
    first, first_path = inputs[0]
    reference = {k: v for k, v in first.get("request", runs_of(*inputs[0])[0]["request"]).items()
                 if k not in DRAW_ONLY}
    for metadata, path in inputs:
        for run in runs_of(metadata, path):
            settings = {k: v for k, v in run["request"].items() if k not in DRAW_ONLY}
            differ = list(dict.fromkeys([k for k in SAME_PHYSICS if metadata.get(k) != first.get(k)] + [
                k for k in sorted(settings.keys() & reference.keys()) if settings[k] != reference[k]]))
            if differ:
                raise DataError(f"{path} and {first_path} differ in {', '.join(differ)}; only samples of one "
                                "process and settings made with different seeds can be merged")
    generated = sum(m["events_generated"] for m, _ in inputs)
    sigma = sum(m["sigma_pb"] * m["events_generated"] for m, _ in inputs) / generated
    sigma_err = float(np.sqrt(sum((m["sigma_err_pb"] * m["events_generated"]) ** 2 for m, _ in inputs))) / generated
    tables = []
    for metadata, path in inputs:
        columns = read_root(path)
        columns["weight"] = columns["weight"] * (sigma / metadata["sigma_pb"] * metadata["events_generated"]
                                                 / generated)
        tables.append(columns)
    if any(t.keys() != tables[0].keys() for t in tables):
        raise DataError(f"{', '.join(paths)}: the samples have different branches; make them with one lit-vae")
    columns = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    events = len(np.unique(columns["event_number"]))
    if events != sum(len(np.unique(t["event_number"])) for t in tables):
        raise DataError(f"{', '.join(paths)}: the same event ids occur in two samples (the same seed twice?); "
                        "merge samples made with different --seed")
    cpu = sum(m["cpu_seconds"] for m, _ in inputs)
    metadata = {
        **{k: first.get(k) for k in SAME_PHYSICS}, "fast": first["fast"],
        "samples": [run for m, p in inputs for run in runs_of(m, p)],
        "chunks": sum(m["chunks"] for m, _ in inputs),
        "pythia_settings": [s for m, _ in inputs for s in m["pythia_settings"]],
        "lit_vae_version": lit_vae.__version__,
        "sigma_pb": sigma, "sigma_err_pb": sigma_err, "events_generated": generated, "events_selected": events,
        "rows": len(columns["weight"]), "selection_efficiency": events / generated,
        "sum_weights_pb": float(columns["weight"].sum()),
        "cpu_seconds": cpu, "selected_per_cpu_second": events / cpu,
        "wall_seconds": sum(m.get("wall_seconds", 0.0) for m, _ in inputs),
        "command": "python -m lit_vae.mc merge " + " ".join(shlex.quote(p) for p in paths),
    }
    write_root(out, columns, metadata)
    return metadata


def assemble(request: Request, process: Process, results: list[JobResult]) -> tuple[dict[str, np.ndarray], dict]:
    """The sample's columns (chunks in order, event weights in pb) and metadata from its chunks' results."""
    truth_tagging = process.truth_tag_default if request.truth_tag is None else request.truth_tag
    accepted = sum(r.accepted for r in results)
    sigma_mb = sum(r.sigma_mb * r.accepted for r in results) / accepted
    sigma_err_mb = np.sqrt(sum((r.sigma_err_mb * r.accepted) ** 2 for r in results)) / accepted
    generated = sum(r.events_generated for r in results)
    columns = {k: np.concatenate([r.columns[k] for r in results]) for k in results[0].columns}
    factor = np.concatenate([r.weight_factor for r in results])

    out = {}
    for name, values in columns.items():
        if name == "event_number":
            out[name] = values.astype(np.uint64)
        elif name in analyses.COUNT_COLUMNS:
            out[name] = values.astype(np.int32)
        else:
            out[name] = values.astype(np.float32)
    out["weight"] = sigma_mb * MB_TO_PB * factor / generated
    events = len(np.unique(out["event_number"]))

    cpu = sum(r.cpu_seconds for r in results)
    metadata = {
        "process": request.process,
        "description": process.description,
        "analysis": process.analysis,
        "request": asdict(request),
        "chunks": len(results),
        "pythia_settings": [r.settings for r in results],
        "pythia_version": version("pythia8mc"),
        "lit_vae_version": lit_vae.__version__,
        "mpi": not request.fast,
        "fast": request.fast,
        "truth_tagging": truth_tagging,
        "truth_tag_floor": request.tag_floor if truth_tagging else None,
        "veto_invisible_pt_min_gev": process.invisible_pt_min if request.veto else None,
        "veto_visible_eta_max": process.visible_eta_max if request.veto else None,
        "sigma_pb": sigma_mb * MB_TO_PB,
        "sigma_err_pb": sigma_err_mb * MB_TO_PB,
        "events_generated": generated,
        "events_selected": events,
        "rows": len(out["weight"]),  # more than events where truth-tagging writes one row per tag configuration
        "selection_efficiency": events / generated,
        "sum_weights_pb": float(out["weight"].sum()),
        "cpu_seconds": cpu,
        "selected_per_cpu_second": events / cpu,
        "detector": DETECTOR.as_dict(),
    }
    return out, metadata

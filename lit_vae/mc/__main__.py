"""`python -m lit_vae.mc PROCESS --events N --out FILE.root [--seed S] [--jobs J] [--fast] [--chunk i/N] ...`
and `python -m lit_vae.mc merge PART.root ... --out FILE.root` (the parts of an array job, or finished samples
made with different seeds)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lit_vae.errors import ConfigError, LitVAEError, OutputError
from lit_vae.mc.analyses import TAG_FLOOR
from lit_vae.mc.processes import PROCESS_NAMES


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line naming the fix, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m lit_vae.mc",
        description="Produce a ROOT ntuple with Pythia 8 + FastJet + lit-vae's parametric detector.",
    )
    parser.add_argument("process", choices=PROCESS_NAMES, metavar="PROCESS", help=f"one of {', '.join(PROCESS_NAMES)}")
    parser.add_argument("--events", type=int, required=True, help="selected events to write")
    parser.add_argument("--out", required=True, help="output ROOT file (written atomically)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1); fixes Pythia and detector")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes, one per core (default 1)")
    parser.add_argument("--fast", action="store_true", help="switch multi-parton interactions off")
    tag = parser.add_mutually_exclusive_group()
    tag.add_argument("--truth-tag", dest="truth_tag", action="store_true", default=None,
                     help="truth-tag b-jets (default for wjets)")
    tag.add_argument("--no-truth-tag", dest="truth_tag", action="store_false", help="tag every jet directly")
    parser.add_argument("--tag-floor", type=float, default=TAG_FLOOR, metavar="P",
                        help=f"truth-tag rows less probable than P are kept with probability p/P at weight P "
                             f"(unbiased thinning; default {TAG_FLOOR}, 0 keeps every row)")
    parser.add_argument("--no-veto", dest="veto", action="store_false",
                        help="switch the process-level veto off (to validate it; much slower)")
    parser.add_argument("--mass", type=float, default=150.0, help="hzg: scalar mass in GeV (default 150)")
    parser.add_argument("--mass-c1n2", type=float, default=500.0, help="c1n2_wh: chi1+-/chi20 mass, GeV")
    parser.add_argument("--mass-lsp", type=float, default=100.0, help="c1n2_wh: chi10 mass, GeV")
    parser.add_argument("--batch-size", type=int, default=400, help="events per Pythia nextBatch call")
    parser.add_argument("--chunk-events", type=int, default=5000,
                        help="selected events per seeded chunk (default 5000; at most 4095 chunks per sample)")
    parser.add_argument("--chunk", default="0/1", metavar="i/N",
                        help="run only part i of N of the request's chunks (one array-job task); "
                             "join the N parts with `python -m lit_vae.mc merge`")
    parser.add_argument("--set", dest="extra_settings", action="append", default=[], metavar="'KEY = VALUE'",
                        help="extra Pythia setting (repeatable)")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error(f"--events must be a positive number of events, got {args.events}")
    if not 1 <= args.jobs <= 255:
        parser.error(f"--jobs must be between 1 and 255, got {args.jobs}")
    if not 0 <= args.seed < 2**20:
        parser.error(f"--seed must be between 0 and {2**20 - 1}, got {args.seed}")
    if not 0 <= args.tag_floor < 1:
        parser.error(f"--tag-floor must be a probability in [0, 1), got {args.tag_floor}")
    if args.batch_size < 1 or args.chunk_events < 1:
        parser.error(f"--batch-size and --chunk-events must be positive, got {args.batch_size}, {args.chunk_events}")
    try:
        index, parts = (int(v) for v in args.chunk.split("/"))
    except ValueError:
        parser.error(f"--chunk must be i/N with integers, e.g. 0/10, got '{args.chunk}'")
    if not 0 <= index < parts:
        parser.error(f"--chunk i/N needs 0 <= i < N, got {args.chunk}")
    args.part = (index, parts)
    return args


def merge_main(argv: list[str]) -> int:
    parser = OneLineParser(prog="python -m lit_vae.mc merge",
                           description="Join the parts of one request (--chunk i/N) into one weighted sample, or "
                                       "finished samples of one process made with different seeds into a larger one.")
    parser.add_argument("parts", nargs="+", help="the part files, every i of 0 ... N-1 once; or the samples")
    parser.add_argument("--out", required=True, help="output ROOT file (written atomically)")
    args = parser.parse_args(argv)
    from lit_vae.mc.production import merge

    try:
        check_output(args.out)
        metadata = merge(args.parts, args.out)
    except LitVAEError as err:
        print(f"lit_vae.mc merge: error: {err}", file=sys.stderr)
        return 2
    joined = {"parts": metadata["parts"]} if "parts" in metadata else {"samples": len(metadata["samples"])}
    print(json.dumps({"out": args.out, "process": metadata["process"], **joined,
                      **{k: metadata[k] for k in ("events_selected", "events_generated", "sigma_pb")}}, indent=1))
    return 0


def check_output(path: str) -> None:
    """Fail before generating if the output cannot be written."""
    out = Path(path)
    if out.suffix != ".root":
        raise ConfigError(f"--out {path}: the output must be a .root file")
    if not out.parent.is_dir():
        raise OutputError(f"--out {path}: directory {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"--out {path}: directory {out.parent} is not writable; choose another --out")


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["merge"]:
        return merge_main(words[1:])
    args = parse_args(words)
    from lit_vae.mc.production import Request, produce, stop_on_signals

    stop_on_signals()

    request = Request(
        process=args.process, events=args.events, out=args.out, seed=args.seed, jobs=args.jobs,
        fast=args.fast, truth_tag=args.truth_tag, tag_floor=args.tag_floor, veto=args.veto, mass=args.mass,
        mass_c1n2=args.mass_c1n2, mass_lsp=args.mass_lsp, batch_size=args.batch_size,
        extra_settings=tuple(args.extra_settings), chunk_events=args.chunk_events, part=args.part,
    )
    try:
        check_output(args.out)
        metadata = produce(request)
    except LitVAEError as err:
        print(f"lit_vae.mc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lit_vae.mc: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 130
    keys = ("process", "events_selected", "cpu_seconds") if args.part[1] > 1 else (
        "process", "events_selected", "events_generated", "selection_efficiency", "sigma_pb", "sum_weights_pb",
        "cpu_seconds", "selected_per_cpu_second")
    summary = {k: metadata[k] for k in keys}
    print(json.dumps({"out": args.out, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

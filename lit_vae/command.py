"""The `lit-vae` command's entry point: --help, `evaluate` and `sweep` without importing Lightning (the
training commands load it, through lit_vae.cli); one-line errors; W&B files kept under runs/."""

from __future__ import annotations

import netrc
import os
import signal
import sys
from pathlib import Path

from lit_vae.errors import LitVAEError


def wandb_logged_in() -> bool:
    """Whether the user has an online W&B account configured (API key in the environment or netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def confine_wandb(run_root: str = "runs") -> None:
    """Keep every W&B file under run_root (nothing in the home directory); offline without a login."""
    root = Path(run_root).resolve()
    for variable, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", ".wandb/cache"), ("WANDB_DATA_DIR", ".wandb/data"),
                          ("WANDB_CONFIG_DIR", ".wandb/config")):
        path = Path(os.environ.setdefault(variable, str(root / sub)))
        path.mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ and not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")  # capturing the progress bar cost ~0.5 ms per refresh


HELP = """usage: lit-vae COMMAND [options]

lit-vae: variational autoencoders for LHC collision events, on PyTorch Lightning.

commands:
  fit        train a model             lit-vae fit --config configs/zgamma/vae.yaml
  validate   validation metrics of a checkpoint's held-out events (--ckpt_path CKPT)
  test       background and signal losses of a checkpoint (--ckpt_path CKPT)
  predict    anomaly scores, one row per event: --ckpt_path CKPT --output scores.parquet
  generate   events from a generator: --ckpt_path CKPT --n_events N --output gen.parquet
  evaluate   generation | anomaly | summary: metrics.json, figures and report.html
  sweep      hyper-parameter sweeps from one file: locally, on a cluster or with W&B agents
  export     ONNX graphs of the score and the generator, verified: --ckpt_path CKPT --output DIR

`lit-vae COMMAND --help` lists a command's options; --debug shows tracebacks of lit-vae's errors."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `lit-vae`."""
    confine_wandb()
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words or os.environ.get("LIT_VAE_DEBUG") == "1"  # tracebacks for lit-vae's own errors
    words = [w for w in words if w != "--debug"]
    if not words or words[0] in ("-h", "--help"):
        print(HELP, file=sys.stdout if words else sys.stderr)
        return 0 if words else 2
    try:
        if words[:1] == ["evaluate"]:
            from lit_vae.evaluation.command import run as evaluate

            evaluate(words[1:])
        elif words[:1] == ["export"]:
            from lit_vae.export import run as export

            export(words[1:])
        elif words[:1] == ["sweep"]:
            from lit_vae.sweep.command import run as sweep

            sweep(words[1:])
        else:
            from lit_vae.cli import build_cli, close_process_group  # Lightning: only for the commands that need it

            build_cli(words)
            close_process_group()
    except LitVAEError as err:
        if debug:
            raise
        print(f"lit-vae: error: {err} (--debug or LIT_VAE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # Lightning's SIGTERMException: the Preemption callback saved a checkpoint
        if type(exit_).__name__ != "SIGTERMException":
            raise
        return 128 + signal.SIGTERM
    finally:  # one W&B run per command, also when called in-process (tests, sweeps)
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish()
    return 0




if __name__ == "__main__":
    sys.exit(main())

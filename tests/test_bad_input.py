"""Bad input through the real `lit-vae` command: every case exits with 2, names the culprit, shows no
traceback, and leaves no output, checkpoint or temporary file behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lit_vae.cli import main
from lit_vae.data.io import read_root, read_root_metadata, write_root
from tests.conftest import write_wh1lbb_manifest
from tests.paths import REPO

LITVAE = str(Path(sys.executable).with_name("lit-vae"))
CONFIG = str(REPO / "configs" / "wh1lbb" / "preselection.yaml")


@pytest.fixture(scope="module")
def checkpoint(wh1lbb_inputs, tmp_path_factory) -> Path:
    """A likelihood VAE fitted for one epoch on the small samples (in-process, once)."""
    folder = tmp_path_factory.mktemp("trained")
    manifest = write_wh1lbb_manifest(wh1lbb_inputs, folder)
    here = os.getcwd()
    os.chdir(folder)
    try:
        os.environ.setdefault("WANDB_MODE", "disabled")
        assert main(["fit", "--config", CONFIG, *data(manifest), "--trainer.max_epochs", "1",
                     "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                     "--trainer.default_root_dir", str(folder)]) == 0
    finally:
        os.chdir(here)
    return next(folder.rglob("last.ckpt"))


def data(manifest) -> list[str]:
    return ["--data.class_path", "lit_vae.data.EventDataModule", "--data.init_args.manifest", str(manifest),
            "--data.init_args.region", "preselection", "--data.init_args.min_events", "0",
            "--data.init_args.batch_size", "64", "--data.init_args.cache_dir", ".cache"]


def edit(manifest: Path, change) -> None:
    content = yaml.safe_load(manifest.read_text())
    change(content)
    manifest.write_text(yaml.safe_dump(content, sort_keys=False))


def rewrite(path: Path, change) -> None:
    columns, metadata = read_root(path), read_root_metadata(path)
    change(columns)
    write_root(path, columns, metadata)


def fit(m, ckpt, *extra):
    return ["fit", "--config", CONFIG, *data(m), "--trainer.max_epochs", "1", *extra]


def predict(m, ckpt, *extra):
    return ["predict", "--config", CONFIG, *data(m), "--ckpt_path", str(ckpt), "--output", "scores.parquet", *extra]


def generate(m, ckpt, *extra):
    return ["generate", "--ckpt_path", str(ckpt), "--output", "gen.parquet", *extra]


def foreign(folder: Path, ckpt: Path) -> Path:
    path = folder / "foreign.ckpt"
    torch.save({"lit_vae": {"class_path": "os.system"}, "state_dict": {}}, path)
    return path


def truncated(folder: Path, ckpt: Path) -> Path:
    path = folder / "truncated.ckpt"
    path.write_bytes(ckpt.read_bytes()[:5000])
    return path


def other_files(folder: Path, manifest: Path) -> None:
    """The same events under another file name: another split definition (backgrounds and their files)."""
    (folder / "wjets_v2.root").write_bytes((folder / "wjets.root").read_bytes())
    edit(manifest, lambda m: m["samples"]["wjets"].update(files=["wjets_v2.root"]))


def read_only(folder: Path, manifest: Path) -> list[str]:
    """Make folder/locked read-only for the command: by its mode, or, for root (who writes through modes),
    by a read-only bind mount in a private mount namespace; the returned words prefix the command."""
    locked = folder / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
        return []
    prefix = ["unshare", "--mount", "sh", "-c",
              'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"', "sh", str(locked)]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount: no way to make a directory read-only")
    return prefix


# (case, how to break the workspace (may return words that prefix the command), command, what the message
# must name)
CASES = [
    ("config missing", None, lambda m, c: ["fit", "--config", "missing.yaml", *data(m)], "missing.yaml"),
    ("unknown config key", None, lambda m, c: fit(m, c, "--model.init_args.latnt_dim", "4"), "latnt_dim"),
    ("wrong value type", None, lambda m, c: fit(m, c, "--model.init_args.latent_dim", "four"), "latent_dim"),
    ("manifest missing", lambda f, m: m.unlink(), fit, "wh1lbb.yaml"),
    ("manifest malformed YAML", lambda f, m: m.write_text("samples: [\n"), fit, "wh1lbb.yaml"),
    ("manifest unknown key", lambda f, m: edit(m, lambda d: d.update(sampels={})), fit, "sampels"),
    ("cut with a forbidden construct",
     lambda f, m: edit(m, lambda d: d["regions"].update(preselection="__import__('os').system('x')")), fit,
     "__import__"),
    ("feature expression with a forbidden construct",
     lambda f, m: edit(m, lambda d: d["features"].update(mbb={"kind": "positive", "expression": "met.real"})),
     fit, "met.real"),
    ("data file missing", lambda f, m: (f / "ttbar.root").unlink(), fit, "ttbar.root"),
    ("data file not ROOT", lambda f, m: (f / "ttbar.root").write_text("not a ROOT file"), fit, "ttbar.root"),
    ("data file truncated", lambda f, m: (f / "ttbar.root").write_bytes((f / "ttbar.root").read_bytes()[:3000]),
     fit, "ttbar.root"),
    ("tree missing", lambda f, m: edit(m, lambda d: d.update(tree="nominal")), fit, "nominal"),
    ("branch missing", lambda f, m: edit(m, lambda d: d["features"].update(met_sig="positive")), fit, "met_sig"),
    ("region selects nothing", lambda f, m: edit(m, lambda d: d["regions"].update(preselection="met < 0")), fit,
     "selects no events"),
    ("a feature all NaN", lambda f, m: rewrite(f / "wjets.root", lambda c: c["mbb"].fill(np.nan)), fit,
     "sample 'wjets'"),
    ("weights non-finite", lambda f, m: rewrite(f / "ttbar.root", lambda c: c["weight"].fill(np.inf)), fit,
     "non-finite weight"),
    ("checkpoint missing", None, lambda m, c: predict(m, "missing.ckpt"), "missing.ckpt"),
    ("checkpoint corrupted", None, lambda m, c: predict(m, truncated(m.parent, c)), "not a readable checkpoint"),
    ("checkpoint of another program", None, lambda m, c: generate(m, foreign(m.parent, c)),
     "is not a lit-vae checkpoint"),
    ("checkpoint trained on another split", other_files, predict, "trained on another backgrounds"),
    ("--output into a missing directory", None, lambda m, c: predict(m, c)[:-2] + ["--output", "no/scores.parquet"],
     "does not exist"),
    ("--output into a read-only directory", read_only,
     lambda m, c: predict(m, c)[:-2] + ["--output", "locked/scores.parquet"], "is not writable"),
    ("generate --n_events 0", None, lambda m, c: generate(m, c, "--n_events", "0"), "must be positive"),
    ("generate --n_events negative", None, lambda m, c: generate(m, c, "--n_events", "-5"), "must be positive"),
]


@pytest.mark.parametrize("case, damage, command, named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(case, damage, command, named, wh1lbb_inputs, checkpoint, tmp_path):
    manifest = write_wh1lbb_manifest(wh1lbb_inputs, tmp_path)
    prefix = damage(tmp_path, manifest) if damage is not None else None
    argv = command(manifest, checkpoint)
    before = set(tmp_path.rglob("*"))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    prefix = prefix if isinstance(prefix, list) else []  # damage functions that are not read_only return None or a size
    result = subprocess.run([*prefix, LITVAE, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and named in result.stderr, result.stderr[-2000:]
    left = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    written = [p for p in left if p.suffix in (".ckpt", ".parquet", ".root", ".tmp") or ".tmp" in p.name]
    assert not written, written  # no output, checkpoint, cache entry or temporary file

"""The manifest: a typed, validated description of samples, features and regions (data_manifests/*.yaml).

Loading checks every key and type and resolves the file globs relative to the manifest (so that a model
can be built from a manifest whose data are elsewhere); reading checks that every pattern matched, and
`check_inputs` opens each file to check its tree and branches. Every problem is a ConfigError or DataError that names
the manifest, the key and, for a typo, the nearest valid name.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lit_vae.data.selection import cut_branches
from lit_vae.errors import ConfigError, DataError

KINDS = ("positive", "real", "angle", "count")
ROLES = ("background", "signal")
TOP_KEYS = {"tree": str, "event_id": str, "samples": dict, "features": dict, "regions": dict}
SAMPLE_KEYS = {"files": list, "role": str, "weight": str, "cross_section_pb": (int, float), "tree": str}
FEATURE_KEYS = {"kind": str, "unit": str}


def nearest(name: str, valid) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # positive | real | angle | count
    unit: str | None = None


@dataclass(frozen=True)
class Sample:
    name: str
    files: tuple[Path, ...]
    role: str  # background | signal
    tree: str
    weight: str | None = None
    cross_section_pb: float | None = None
    missing: tuple[str, ...] = ()  # file patterns that matched nothing: an error once data is read

    @property
    def is_signal(self) -> bool:
        return self.role == "signal"


@dataclass(frozen=True)
class Manifest:
    path: Path
    samples: dict[str, Sample]
    features: dict[str, Feature]
    regions: dict[str, str]
    event_id: str | None
    content_hash: str  # sha256 of the manifest text

    def region_cut(self, region: str) -> str:
        if region not in self.regions:
            raise ConfigError(f"{self.path}: region '{region}' does not exist{nearest(region, self.regions)}; "
                              f"valid regions: {', '.join(self.regions)}")
        return self.regions[region]

    def branches(self, region: str, features: list[str], sample: Sample) -> list[str]:
        """Every branch needed to select region and read features, weight and event id of sample."""
        needed = [*features, *sorted(cut_branches(self.region_cut(region)) - set(features))]
        for extra in (sample.weight, self.event_id):
            if extra and extra not in needed:
                needed.append(extra)
        return needed


def _check_keys(where: str, mapping: dict, schema: dict[str, Any], required: set[str]) -> None:
    for key, value in mapping.items():
        if key not in schema:
            raise ConfigError(f"{where}: unknown key '{key}'{nearest(key, schema)}; valid keys: {', '.join(schema)}")
        if not isinstance(value, schema[key]) or isinstance(value, bool):
            expected = schema[key].__name__ if isinstance(schema[key], type) else "number"
            raise ConfigError(f"{where}: key '{key}' must be a {expected}, got {type(value).__name__} {value!r}")
    for key in sorted(required - set(mapping)):
        raise ConfigError(f"{where}: missing required key '{key}'")


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; file globs are resolved relative to it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist; the shipped ones are in data_manifests/")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a manifest is a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(str(path), raw, TOP_KEYS, {"samples", "features", "regions"})
    tree = raw.get("tree", "events")

    samples = {}
    for name, spec in raw["samples"].items():
        where = f"{path}: samples.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a mapping with keys {', '.join(SAMPLE_KEYS)}")
        _check_keys(where, spec, SAMPLE_KEYS, {"files", "role"})
        if spec["role"] not in ROLES:
            raise ConfigError(f"{where}.role: '{spec['role']}' is not one of {', '.join(ROLES)}")
        files, missing = [], []
        for pattern in spec["files"]:
            matched = sorted(glob.glob(str(path.parent / pattern)))
            files.extend(Path(m) for m in matched)
            if not matched:
                missing.append(pattern)
        samples[name] = Sample(name, tuple(files), spec["role"], spec.get("tree", tree), spec.get("weight"),
                               spec.get("cross_section_pb"), tuple(missing))
    if not samples:
        raise ConfigError(f"{path}: samples is empty")

    features = {}
    for name, spec in raw["features"].items():
        spec = {"kind": spec} if isinstance(spec, str) else spec
        where = f"{path}: features.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: give a kind ({', '.join(KINDS)}) or a mapping with 'kind' and 'unit'")
        _check_keys(where, spec, FEATURE_KEYS, {"kind"})
        if spec["kind"] not in KINDS:
            raise ConfigError(f"{where}.kind: '{spec['kind']}' is not one of {', '.join(KINDS)}"
                              f"{nearest(spec['kind'], KINDS)}")
        features[name] = Feature(name, spec["kind"], spec.get("unit"))

    regions = {}
    for name, cut in raw["regions"].items():
        if not isinstance(cut, str):
            raise ConfigError(f"{path}: regions.{name} must be a cut expression string")
        try:
            cut_branches(cut)
        except ConfigError as err:
            raise ConfigError(f"{path}: regions.{name}: {err}") from None
        regions[str(name)] = cut
    return Manifest(path, samples, features, regions, raw.get("event_id"), hashlib.sha256(text.encode()).hexdigest())


def check_files_exist(manifest: Manifest) -> None:
    """Every file pattern of every sample matches at least one file."""
    for sample in manifest.samples.values():
        for pattern in sample.missing:
            raise DataError(f"{manifest.path}: samples.{sample.name}.files: no file matches '{pattern}' "
                            f"(relative to {manifest.path.parent}); run `make samples` or fix the path")


def check_inputs(manifest: Manifest, region: str, features: list[str]) -> None:
    """Open every input file of the manifest and check its tree and the branches the region needs."""
    import uproot

    check_files_exist(manifest)
    for name in features:
        if name not in manifest.features:
            raise ConfigError(f"{manifest.path}: feature '{name}' is not in the manifest"
                              f"{nearest(name, manifest.features)}")
    for sample in manifest.samples.values():
        needed = manifest.branches(region, features, sample)
        for file in sample.files:
            if file.suffix == ".parquet":
                import pyarrow.parquet as pq

                available = set(pq.read_schema(file).names)
            else:
                try:
                    with uproot.open(file) as f:
                        if sample.tree not in f:
                            raise DataError(f"{file}: no tree '{sample.tree}' (sample '{sample.name}' in "
                                            f"{manifest.path}); found {sorted(f.keys(cycle=False))}")
                        available = set(f[sample.tree].keys())
                except DataError:
                    raise
                except Exception as err:  # uproot's errors for truncated or foreign files are many
                    raise DataError(f"{file}: cannot be read as ROOT ({type(err).__name__}); "
                                    "is it truncated? regenerate it with `make samples`") from None
            for branch in needed:
                if branch not in available:
                    raise DataError(f"{file}: no branch '{branch}'{nearest(branch, available)} "
                                    f"(needed by sample '{sample.name}' in {manifest.path})")

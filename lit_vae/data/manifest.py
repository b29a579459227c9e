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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lit_vae.data.selection import OBJECT_FIELDS, cut_branches, evaluate, expression_names, parse_cut
from lit_vae.errors import ConfigError, DataError

KINDS = ("positive", "real", "angle", "count")
ROLES = ("background", "signal")
TOP_KEYS = {"tree": str, "event_id": str, "samples": dict, "features": dict, "regions": dict, "auxiliary": dict,
            "objects": dict, "derived": dict, "basis": list, "azimuth": str, "preselection": str}
SAMPLE_KEYS = {"files": list, "role": str, "weight": str, "cross_section_pb": (int, float), "tree": str}
FEATURE_KEYS = {"kind": str, "unit": str, "expression": str}


def nearest(name: str, valid) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # positive | real | angle | count
    unit: str | None = None
    expression: str | None = None  # computed from stored branches (auxiliary) or from other features (derived)


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
    auxiliary: dict[str, Feature] = field(default_factory=dict)  # read, but not default training features
    objects: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> pt, eta, phi, mass expressions
    derived: dict[str, Feature] = field(default_factory=dict)  # exact functions of other features
    basis: tuple[str, ...] = ()  # what a generator models when derived features are computed
    azimuth: str | None = None  # the reference angle of `azimuth: relative`
    preselection: str | None = None  # the object selection every event passes (bounds of generated events)

    def feature(self, name: str) -> Feature:
        """A training, auxiliary or derived feature by name."""
        for table in (self.features, self.auxiliary, self.derived):
            if name in table:
                return table[name]
        known = {**self.features, **self.auxiliary, **self.derived}
        raise ConfigError(f"{self.path}: feature '{name}' is not in the manifest{nearest(name, known)}")

    def region_cut(self, region: str) -> str:
        if region not in self.regions:
            raise ConfigError(f"{self.path}: region '{region}' does not exist{nearest(region, self.regions)}; "
                              f"valid regions: {', '.join(self.regions)}")
        return self.regions[region]

    def stored(self, name: str) -> set[str]:
        """The branches a feature is read or computed from (through the auxiliary features it reads)."""
        feature = self.feature(name)
        if not feature.expression:
            return {name}
        reads = expression_names(feature.expression, self.objects)
        return set().union(*(self.stored(n) if n in self.auxiliary else {n} for n in reads))

    def column(self, name: str, columns: dict[str, np.ndarray]) -> np.ndarray:
        """A feature over columns of stored branches: the branch itself, or its expression evaluated; the
        auxiliary features it reads are computed first and added to columns."""
        feature = self.feature(name)
        if name in columns or not feature.expression:
            return columns[name]
        for needed in sorted(expression_names(feature.expression, self.objects) - set(columns)):
            if needed in self.auxiliary:
                self.column(needed, columns)
        columns[name] = np.asarray(evaluate(feature.expression, columns, self.objects), dtype=np.float64)
        return columns[name]

    def branches(self, region: str, features: list[str], sample: Sample) -> list[str]:
        """Every branch needed to select region and read features, weight and event id of sample."""
        read = [n for n in features if not self.feature(n).expression]
        computed = set().union(*(self.stored(n) for n in features), cut_branches(self.region_cut(region), self.objects))
        needed = [*read, *sorted(computed - set(read))]
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

    features = _features(path, raw["features"], "features")
    objects = _objects(path, raw.get("objects", {}))
    auxiliary = _features(path, raw.get("auxiliary", {}), "auxiliary", objects)
    _check_auxiliary_order(path, auxiliary, objects)
    derived = _derived(path, raw.get("derived", {}), {**features, **auxiliary}, objects)

    regions = {}
    for name, cut in raw["regions"].items():
        if not isinstance(cut, str):
            raise ConfigError(f"{path}: regions.{name} must be a cut expression string")
        try:
            cut_branches(cut, objects)
        except ConfigError as err:
            raise ConfigError(f"{path}: regions.{name}: {err}") from None
        regions[str(name)] = cut
    digest = hashlib.sha256(text.encode()).hexdigest()
    manifest = Manifest(path, samples, features, regions, raw.get("event_id"), digest, auxiliary, objects, derived,
                        tuple(raw.get("basis", ())), raw.get("azimuth"), raw.get("preselection"))
    _check_physics(manifest)
    return manifest


def _features(path: Path, raw: dict, key: str, objects: dict | None = None) -> dict[str, Feature]:
    features = {}
    for name, spec in raw.items():
        spec = {"kind": spec} if isinstance(spec, str) else spec
        where = f"{path}: {key}.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: give a kind ({', '.join(KINDS)}) or a mapping with 'kind' and 'unit'")
        _check_keys(where, spec, FEATURE_KEYS, {"kind"})
        if spec["kind"] not in KINDS:
            raise ConfigError(f"{where}.kind: '{spec['kind']}' is not one of {', '.join(KINDS)}"
                              f"{nearest(spec['kind'], KINDS)}")
        if "expression" in spec:
            _parse(where, spec["expression"], objects or {})
        features[name] = Feature(name, spec["kind"], spec.get("unit"), spec.get("expression"))
    return features


def _parse(where: str, expression, objects=frozenset()) -> None:
    try:
        parse_cut(expression, set(objects))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _objects(path: Path, raw: dict) -> dict[str, dict[str, str]]:
    """Physics objects: pt, eta, phi and mass, each a column name, an expression or a number."""
    objects = {}
    for name, spec in raw.items():
        where = f"{path}: objects.{name}"
        if not isinstance(spec, dict) or set(spec) != set(OBJECT_FIELDS):
            raise ConfigError(f"{where}: give exactly the keys {', '.join(OBJECT_FIELDS)} (column names, "
                              "expressions or numbers), e.g. {pt: l1_pt, eta: l1_eta, phi: l1_phi, mass: 0}")
        for key, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ConfigError(f"{where}.{key}: must be a column name, an expression or a number")
            _parse(f"{where}.{key}", str(value))
        objects[str(name)] = {k: str(v) for k, v in spec.items()}
    return objects


def _check_auxiliary_order(path: Path, auxiliary: dict[str, Feature], objects: dict) -> None:
    """An auxiliary expression reads stored branches and auxiliary features declared before it (no cycles)."""
    for i, (name, feature) in enumerate(auxiliary.items()):
        later = set(list(auxiliary)[i:])
        reads = expression_names(feature.expression, objects) & later if feature.expression else set()
        if reads:
            raise ConfigError(f"{path}: auxiliary.{name} reads {sorted(reads)}, declared at or after it; declare "
                              "auxiliary features before the ones that read them")


def _derived(path: Path, raw: dict, known: dict[str, Feature], objects: dict) -> dict[str, Feature]:
    """Derived features: an expression, or a mapping with expression, kind and unit (kind and unit default
    to those of the declared feature of the same name)."""
    derived = {}
    for name, spec in raw.items():
        where = f"{path}: derived.{name}"
        spec = {"expression": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: give an expression or a mapping with 'expression', 'kind' and 'unit'")
        _check_keys(where, spec, FEATURE_KEYS, {"expression"})
        _parse(where, spec["expression"], objects)
        base = known.get(name)
        kind = spec.get("kind") or (base.kind if base else None)
        if kind not in KINDS:
            raise ConfigError(f"{where}: needs a kind ({', '.join(KINDS)}): it is not a declared feature")
        derived[str(name)] = Feature(str(name), kind, spec.get("unit") or (base.unit if base else None),
                                     spec["expression"])
    return derived


def _check_physics(manifest: Manifest) -> None:
    """The basis is made of declared features, and every feature is in it or derived from it."""
    where, declared = str(manifest.path), {**manifest.features, **manifest.auxiliary}
    if not manifest.basis:
        for key in ("derived", "azimuth"):
            if getattr(manifest, key):
                raise ConfigError(f"{where}: '{key}' needs a 'basis' (the features a generator models)")
        return
    for name in manifest.basis:
        if name not in declared:
            raise ConfigError(f"{where}: basis feature '{name}' is not declared in features or auxiliary"
                              f"{nearest(name, declared)}")
    available = set(manifest.basis)
    for name, feature in manifest.derived.items():
        missing = expression_names(feature.expression, manifest.objects) - available
        if missing:
            raise ConfigError(f"{where}: derived.{name} reads {sorted(missing)}, which are neither basis features "
                              "nor derived before it")
        available.add(name)
    for name in manifest.features:
        if name not in available:
            raise ConfigError(f"{where}: feature '{name}' is neither in the basis nor derived from it")
    if manifest.azimuth and manifest.azimuth not in manifest.basis:
        raise ConfigError(f"{where}: azimuth '{manifest.azimuth}' must be a basis feature (the reference angle)")
    for key in ("preselection",):
        if getattr(manifest, key):
            _parse(f"{where}: {key}", getattr(manifest, key), manifest.objects)


def check_files_exist(manifest: Manifest) -> None:
    """Every file pattern of every sample matches at least one file."""
    for sample in manifest.samples.values():
        for pattern in sample.missing:
            raise DataError(f"{manifest.path}: samples.{sample.name}.files: no file matches '{pattern}' "
                            f"(relative to {manifest.path.parent}); run `make samples` or fix the path")


def check_inputs(manifest: Manifest, region: str, features: list[str]) -> dict[tuple[str, Path], tuple[int, set[str]]]:
    """Open every input file of the manifest once and check its tree and the branches the region needs;
    returns (sample, file) -> the file's entries and branch names."""
    import uproot

    check_files_exist(manifest)
    for name in features:
        manifest.feature(name)
    contents = {}
    for sample in manifest.samples.values():
        needed = manifest.branches(region, features, sample)
        for file in sample.files:
            if file.suffix == ".parquet":
                import pyarrow.parquet as pq

                metadata = pq.read_metadata(file)
                entries, available = metadata.num_rows, set(metadata.schema.to_arrow_schema().names)
            else:
                try:
                    with uproot.open(file) as f:
                        if sample.tree not in f:
                            raise DataError(f"{file}: no tree '{sample.tree}' (sample '{sample.name}' in "
                                            f"{manifest.path}); found {sorted(f.keys(cycle=False))}")
                        tree = f[sample.tree]
                        entries, available = tree.num_entries, set(tree.keys())
                except DataError:
                    raise
                except Exception as err:  # uproot's errors for truncated or foreign files are many
                    raise DataError(f"{file}: cannot be read as ROOT ({type(err).__name__}); "
                                    "is it truncated? regenerate it with `make samples`") from None
            for branch in needed:
                if branch not in available:
                    raise DataError(f"{file}: no branch '{branch}'{nearest(branch, available)} "
                                    f"(needed by sample '{sample.name}' in {manifest.path})")
            contents[sample.name, file] = (entries, available)
    return contents

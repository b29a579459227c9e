"""Data layer: manifests, reading and writing ntuples, region selections, splits, transforms."""

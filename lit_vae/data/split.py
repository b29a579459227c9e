"""The seeded train/validation split, decided per event from its id so that it does not depend on file
order, chunking or which other events were read."""

from __future__ import annotations

import hashlib

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective, well-mixing hash of 64-bit integers."""
    with np.errstate(over="ignore"):
        z = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def uniform_from_id(event_id: np.ndarray, sample: str, seed: int) -> np.ndarray:
    """A number in [0, 1) per event, fixed by (seed, sample, event id) alone."""
    salt = int.from_bytes(hashlib.sha256(f"{seed}|{sample}".encode()).digest()[:8], "little")
    mixed = splitmix64(np.asarray(event_id, dtype=np.uint64) ^ np.uint64(salt))
    return (mixed >> np.uint64(11)).astype(np.float64) / 2.0**53


def is_train(event_id: np.ndarray, sample: str, seed: int, train_fraction: float) -> np.ndarray:
    """True for the events of the training part (a fraction train_fraction of them, on average)."""
    return uniform_from_id(event_id, sample, seed) < train_fraction


def background_train_mask(table, seed: int, train_fraction: float) -> np.ndarray:
    """True for the background events of the training part of a region table (`read_region`'s layout:
    categorical `sample`, `event_id`, `is_signal`); signals are never trained on. The DataModule and the
    evaluation use this one mask, so evaluation can take exactly the validation part."""
    codes = table["sample"].cat.codes.to_numpy()
    ids = table["event_id"].to_numpy(dtype=np.uint64)
    background = ~table["is_signal"].to_numpy(dtype=bool)
    train = np.zeros(len(table), dtype=bool)
    for code, name in enumerate(table["sample"].cat.categories):
        rows = (codes == code) & background
        if rows.any():
            train[rows] = is_train(ids[rows], str(name), seed, train_fraction)
    return train


def background_subset_mask(table, seed: int, max_events: int | None) -> np.ndarray:
    """True for the signals and the max_events background rows in all with the smallest seeded hash of their
    event id (salted per sample: order-independent; every row when max_events is None): the events a
    `max_events` run reads. The DataModule and the evaluation's baselines use this one mask."""
    background = ~table["is_signal"].to_numpy(dtype=bool)
    if max_events is None:
        return np.ones(len(table), dtype=bool)
    codes = table["sample"].cat.codes.to_numpy()
    ids = table["event_id"].to_numpy(dtype=np.uint64)
    u = np.full(len(table), np.inf)
    for code, name in enumerate(table["sample"].cat.categories):
        rows = (codes == code) & background
        u[rows] = uniform_from_id(ids[rows], f"subset|{name}", seed)
    keep = ~background
    keep[np.argsort(u, kind="stable")[:max_events]] = True
    return keep

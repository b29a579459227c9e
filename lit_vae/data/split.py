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


def background_train_mask(sample: np.ndarray, event_id: np.ndarray, is_signal: np.ndarray, seed: int,
                          train_fraction: float) -> np.ndarray:
    """True for the background events of the training part of a region table (signals are never trained
    on); the same mask the DataModule uses, so evaluation can take exactly the validation part."""
    train = np.zeros(len(event_id), dtype=bool)
    for name in np.unique(sample[~is_signal]):
        rows = (sample == name) & ~is_signal
        train[rows] = is_train(event_id[rows], str(name), seed, train_fraction)
    return train

"""Transforms invert to float precision and keep their state as tensors; the split is seeded and stable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_vae.data.split import is_train, splitmix64
from lit_vae.data.transforms import FeatureTransform
from lit_vae.errors import DataError

KINDS = ["positive", "real", "angle", "count"]


def physical(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.lognormal(4, 0.7, n), rng.normal(0, 2, n), rng.uniform(-np.pi, np.pi, n),
                     rng.integers(0, 6, n)], axis=1)


def test_round_trip_to_float_precision():
    x = physical()
    transform = FeatureTransform.fit(x, KINDS)
    back = transform.inverse(transform(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(back[:, 3], x[:, 3])  # counts come back as exact integers


def test_log_jacobian_is_the_log_of_autograds_diagonal():
    x = torch.from_numpy(physical(50, seed=3)[:, [0, 1, 2, 3, 0]])
    transform = FeatureTransform.fit(physical(seed=4)[:, [0, 1, 2, 3, 0]], [*KINDS, "positive"])
    # the map is elementwise: the Jacobian of one event is diagonal, its entries the derivatives of the sum
    jacobian = torch.autograd.functional.jacobian(lambda a: transform(a).double().sum(dim=0), x)  # (5, 50, 5)
    derivatives = jacobian.diagonal(dim1=0, dim2=2)  # d y_nj / d x_nj, (50, 5)
    assert derivatives.shape == (50, 5) and (jacobian.abs().sum() - derivatives.abs().sum()).abs() < 1e-9
    expected = derivatives.abs().log().sum(dim=1)
    np.testing.assert_allclose(transform.log_abs_det_jacobian(x).numpy(), expected.numpy(), rtol=1e-5)


def test_fit_encode_fits_on_the_training_rows_and_encodes_every_row_as_the_transform_does():
    x = physical()
    rows = np.random.default_rng(1).random(len(x)) < 0.6
    transform, encoded = FeatureTransform.fit_encode(x, KINDS, rows)
    on_train = FeatureTransform.fit(x[rows], KINDS)
    for name in ("log_scale", "mean", "std"):
        torch.testing.assert_close(getattr(transform, name), getattr(on_train, name), rtol=1e-12, atol=0)
    torch.testing.assert_close(encoded, on_train(torch.from_numpy(x)), rtol=0, atol=1e-6)
    assert not torch.equal(transform.mean, FeatureTransform.fit(x, KINDS).mean)  # the rows matter
    assert torch.equal(encoded, transform(torch.from_numpy(x)))  # bit for bit what `predict` computes
    assert encoded.is_contiguous()  # row-major: batches are gathered by rows
    # the fitted bits are numpy's mean and std over the row-major staged training table, whatever the layout
    staged = transform._stage(torch.from_numpy(x[rows])).numpy()
    assert np.array_equal(transform.mean.numpy()[[0, 1, 3]], staged.mean(axis=0)[[0, 1, 3]])
    assert np.array_equal(transform.std.numpy()[[0, 1, 3]], staged.std(axis=0)[[0, 1, 3]])
    for fortran, row_major in ((FeatureTransform.fit_encode(np.asfortranarray(x), KINDS, r),
                                FeatureTransform.fit_encode(x, KINDS, r)) for r in (rows, None)):
        assert torch.equal(fortran[0].mean, row_major[0].mean) and torch.equal(fortran[0].std, row_major[0].std)
        assert torch.equal(fortran[1], row_major[1])
    with pytest.raises(DataError, match="no training events"):
        FeatureTransform.fit_encode(x, KINDS, np.zeros(len(x), bool))
    with pytest.raises(DataError, match="boolean mask"):
        FeatureTransform.fit_encode(x, KINDS, np.flatnonzero(rows))  # indices are not a mask
    with pytest.raises(DataError, match="4 feature kinds"):
        FeatureTransform.fit_encode(x[:, :3], KINDS)


def test_standardised_on_the_fit_sample_and_angles_scaled():
    x = physical()
    y = FeatureTransform.fit(x, KINDS)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y[:, [0, 1, 3]].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y[:, [0, 1, 3]].std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(y[:, 2], x[:, 2] / np.pi, rtol=1e-6)
    # log1p(x / median) then standardised: compare with an independent computation.
    staged = np.log1p(x[:, 0] / np.median(x[:, 0]))
    np.testing.assert_allclose(y[:, 0], (staged - staged.mean()) / staged.std(), atol=1e-5)


def test_inverse_keeps_physical_ranges():
    transform = FeatureTransform.fit(physical(), KINDS)
    y = torch.randn(5000, 4) * 4  # a generator's outputs can be anywhere
    x = transform.inverse(y).numpy()
    assert np.all(x[:, 0] >= 0) and np.all((x[:, 2] >= -np.pi) & (x[:, 2] < np.pi))
    assert np.all(x[:, 3] >= 0) and np.array_equal(x[:, 3], np.round(x[:, 3]))


def test_state_round_trips_through_a_state_dict_and_plain_data():
    transform = FeatureTransform.fit(physical(), KINDS, target_scale=[100.0, 1.0, 1.0, 1.0])
    fresh = FeatureTransform(KINDS)
    fresh.load_state_dict(transform.state_dict())
    x = torch.from_numpy(physical(100, seed=1))
    torch.testing.assert_close(fresh(x), transform(x))
    torch.testing.assert_close(FeatureTransform.from_state(transform.state())(x), transform(x))
    targets = transform.targets(x)
    torch.testing.assert_close(targets[:, 0], (x[:, 0] / 100).float())
    torch.testing.assert_close(targets[:, 3], x[:, 3].float())


def test_targets_are_row_major_float32_rounded_once_from_any_layout():
    transform = FeatureTransform.fit(physical(), KINDS, target_scale=[100.0, 3.0, 1.0, 7.0])
    x = physical(1_000, seed=2)
    expected = (x / np.array([100.0, 3.0, 1.0, 1.0])).astype(np.float32)  # counts keep their scale of 1
    for table in (np.ascontiguousarray(x), np.asfortranarray(x)):
        targets = transform.targets(torch.from_numpy(table))
        assert targets.dtype == torch.float32 and targets.is_contiguous()  # batches gather whole rows
        np.testing.assert_array_equal(targets.numpy(), expected)
    torch.testing.assert_close(transform.physical(transform.targets(torch.from_numpy(x))),
                               torch.from_numpy(x).float())


def test_negative_values_in_a_positive_feature_are_refused():
    x = physical()
    x[0, 0] = -1
    with pytest.raises(DataError, match="declared positive but have negative values"):
        FeatureTransform.fit(x, KINDS)


def test_split_fraction_stability_and_seeds():
    ids = np.arange(200_000, dtype=np.uint64) + (np.uint64(101) << np.uint64(44))
    train = is_train(ids, "zgamma", seed=42, train_fraction=0.6)
    assert train.mean() == pytest.approx(0.6, abs=0.01)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(is_train(ids[shuffled], "zgamma", 42, 0.6), train[shuffled])  # order-free
    assert (is_train(ids, "zgamma", 43, 0.6) != train).mean() > 0.4  # another seed, another split
    assert (is_train(ids, "ttbar", 42, 0.6) != train).mean() > 0.4  # samples are split independently


def test_splitmix64_is_a_bijection_on_a_range():
    values = splitmix64(np.arange(100_000, dtype=np.uint64))
    assert len(np.unique(values)) == 100_000
    assert splitmix64(np.array([0], dtype=np.uint64))[0] == np.uint64(0xE220A8397B1DCDAF)  # reference value

"""Densities, KLs and heads against scipy, torch.distributions and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from lit_vae.models.distributions import (
    HEADS,
    LearnablePrior,
    clipped_lognormal_log_prob,
    clipped_lognormal_mixture_log_prob,
    discrete_gaussian_log_prob,
    kl_diagonal_gaussians,
    kl_standard_normal,
)


@pytest.fixture(autouse=True)
def double_precision():
    """Compare with scipy in float64; restore the default afterwards (it is global state)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_clipped_lognormal_matches_scipy_and_the_point_mass():
    x = torch.tensor([1e-6, 5e-5, 0.5, 3.0, 250.0])
    fraction, mu, sigma = torch.tensor(0.2), torch.tensor(1.1), torch.tensor(0.7)
    got = clipped_lognormal_log_prob(x, fraction, mu, sigma).numpy()
    expected = np.log(0.8) + stats.lognorm.logpdf(x.numpy(), s=0.7, scale=np.exp(1.1))
    np.testing.assert_allclose(got[2:], expected[2:], rtol=1e-10)
    np.testing.assert_allclose(got[:2], np.log(0.2))
    # Normalised: point mass + integral of the continuous part above the threshold = 1.
    cont, _ = integrate.quad(lambda v: np.exp(clipped_lognormal_log_prob(
        torch.tensor(v), fraction, mu, sigma).item()), 1e-4, np.inf, limit=200)
    assert 0.2 + cont == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("mu, sigma", [(0.3, 0.8), (2.6, 0.5), (-1.5, 1.2), (9.0, 0.3), (-6.0, 0.4), (40.0, 2.0)])
def test_discrete_gaussian_is_normalised_and_integrates_the_gaussian(mu, sigma):
    n = torch.arange(0, 200, dtype=torch.float64)
    log_p = discrete_gaussian_log_prob(n, torch.tensor(mu), torch.tensor(sigma))
    assert torch.isfinite(log_p[:60]).all()
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    norm = stats.norm.sf(-0.5, loc=mu, scale=sigma)
    for k in (0, 1, 3):
        integral, _ = integrate.quad(stats.norm(mu, sigma).pdf, k - 0.5, k + 0.5)
        if integral > 1e-300:
            assert log_p[k].exp().item() == pytest.approx(integral / norm, rel=1e-6, abs=1e-300)


def test_discrete_gaussian_far_tail_is_finite():
    log_p = discrete_gaussian_log_prob(torch.tensor([0.0, 30.0]), torch.tensor(30.0), torch.tensor(0.5))
    assert torch.isfinite(log_p).all() and log_p[0] < -1000


def test_kl_forms():
    mu, log_sigma = torch.randn(100, 8), 0.3 * torch.randn(100, 8)
    q = torch.distributions.Normal(mu, log_sigma.exp())
    p = torch.distributions.Normal(torch.zeros(8), torch.ones(8))
    torch.testing.assert_close(kl_standard_normal(mu, log_sigma), torch.distributions.kl_divergence(q, p).sum(-1))
    # The paper's printed form is minimised at sigma = 1/sqrt(2), not at the prior's sigma = 1.
    sigmas = torch.linspace(0.3, 1.5, 1201)
    paper = kl_standard_normal(torch.zeros(1201, 1), sigmas.log()[:, None], form="paper")
    assert sigmas[paper.argmin()].item() == pytest.approx(2**-0.5, abs=2e-3)
    with pytest.raises(ValueError, match="kl_form must be"):
        kl_standard_normal(mu, log_sigma, form="other")


def test_kl_between_diagonal_gaussians_matches_torch():
    mu_q, ls_q, mu_p, ls_p = torch.randn(50, 6), 0.4 * torch.randn(50, 6), torch.randn(6), 0.4 * torch.randn(6)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu_q, ls_q.exp()),
                                                 torch.distributions.Normal(mu_p, ls_p.exp())).sum(-1)
    torch.testing.assert_close(kl_diagonal_gaussians(mu_q, ls_q, mu_p, ls_p), expected)


def test_learnable_prior_gets_gradients_and_moves():
    prior = LearnablePrior(4)
    optimiser = torch.optim.SGD(prior.parameters(), lr=0.1)
    mu, log_sigma = torch.full((64, 4), 2.0), torch.full((64, 4), -1.0)
    for _ in range(50):
        optimiser.zero_grad()
        loss = prior.kl(mu, log_sigma).mean()
        loss.backward()
        assert prior.mu.grad.abs().sum() > 0 and prior.log_sigma.grad.abs().sum() > 0
        optimiser.step()
    assert torch.all(prior.mu > 1.0) and torch.all(prior.log_sigma < -0.3)  # moved towards the posterior


def draw(name: str, raw: torch.Tensor, n: int = 40_000) -> torch.Tensor:
    return HEADS[name].sample(raw.expand(n, -1), generator=torch.Generator().manual_seed(0))


def test_discrete_gaussian_samples_follow_the_pmf():
    raw = torch.tensor([1.7, 0.2])
    samples = draw("discrete_gaussian", raw)
    pmf = HEADS["discrete_gaussian"].log_prob(torch.arange(8.0), raw.expand(8, 2)).exp().numpy()
    np.testing.assert_allclose(np.bincount(samples.long().numpy(), minlength=8)[:8] / len(samples), pmf, atol=0.01)


def test_clipped_lognormal_is_normalised_when_much_of_the_log_normal_lies_below_the_threshold():
    """The continuous part is the log-normal truncated at the threshold; samples never fall below it."""
    fraction, mu, sigma = torch.tensor(0.3), torch.tensor(np.log(1e-4) + 0.2), torch.tensor(0.5)
    x = torch.tensor([2e-4, 1e-3])
    lognormal = stats.lognorm(s=0.5, scale=np.exp(mu.item()))
    np.testing.assert_allclose(clipped_lognormal_log_prob(x, fraction, mu, sigma).numpy(),
                               np.log(0.7) + lognormal.logpdf(x.numpy()) - lognormal.logsf(1e-4), rtol=1e-8)
    cont, _ = integrate.quad(lambda v: np.exp(clipped_lognormal_log_prob(
        torch.tensor(v), fraction, mu, sigma).item()), 1e-4, np.inf, limit=400)
    assert 0.3 + cont == pytest.approx(1.0, abs=1e-6)
    raw = torch.tensor([np.log(0.3 / 0.7), mu.item(), np.log(np.expm1(0.5 - 1e-3))])
    samples = draw("clipped_lognormal", raw)
    above = samples[samples > 0].numpy()
    assert above.min() >= 1e-4
    assert stats.kstest(above, lambda v: (lognormal.cdf(v) - lognormal.cdf(1e-4)) / lognormal.sf(1e-4)).pvalue > 1e-3


def test_clipped_lognormal_samples_follow_the_density():
    raw = torch.tensor([-1.0, 3.0, -0.5])
    samples = draw("clipped_lognormal", raw)
    fraction, _, sigma = HEADS["clipped_lognormal"].params(raw)
    assert (samples == 0).double().mean().item() == pytest.approx(fraction.item(), abs=0.01)
    lognormal = stats.lognorm(s=sigma.item(), scale=np.exp(3.0))
    assert stats.kstest(samples[samples > 0].numpy(), lognormal.cdf).pvalue > 1e-3


MIXTURE_RAW = torch.tensor([-1.5, 0.3, -0.4, 0.0, 3.0, 4.4, np.log(1e-4) + 0.5, 0.2, -0.3, 0.6])  # (f, w, mu, sigma)


def truncated_lognormal_mixture(raw: torch.Tensor):
    """scipy's version of the mixture head's continuous part: weights, frozen log-normals, their mass above 1e-4."""
    fraction, log_weights, mu, sigma = HEADS["clipped_lognormal_mixture"].params(raw)
    parts = [stats.lognorm(s=s, scale=np.exp(m)) for m, s in zip(mu.tolist(), sigma.tolist(), strict=True)]
    return fraction.item(), log_weights.exp().numpy(), parts


def test_clipped_lognormal_mixture_matches_scipy_is_normalised_and_reduces_to_one_component():
    fraction, weights, parts = truncated_lognormal_mixture(MIXTURE_RAW)
    x = torch.tensor([1e-6, 2e-4, 0.7, 20.0, 90.0, 400.0])
    got = HEADS["clipped_lognormal_mixture"].log_prob(x, MIXTURE_RAW.expand(len(x), -1)).numpy()
    continuous = sum(w * p.pdf(x.numpy()) / p.sf(1e-4) for w, p in zip(weights, parts, strict=True))
    np.testing.assert_allclose(got[1:], np.log((1 - fraction) * continuous[1:]), atol=1e-7)  # log_ndtr: 1.2e-7
    assert got[0] == pytest.approx(np.log(fraction))
    edges = [1e-4, 1e-3, 20.0, 80.0, np.inf]  # around the three components' modes
    def density(v: float) -> float:
        return np.exp(HEADS["clipped_lognormal_mixture"].log_prob(torch.tensor([v]), MIXTURE_RAW[None]).item())
    cont = sum(integrate.quad(density, a, b, limit=400)[0] for a, b in zip(edges[:-1], edges[1:], strict=True))
    assert fraction + cont == pytest.approx(1.0, abs=1e-6)
    # one component is the clipped log-normal itself
    f, mu, sigma = torch.tensor(0.2), torch.tensor([1.1]), torch.tensor([0.7])
    np.testing.assert_allclose(clipped_lognormal_mixture_log_prob(x, f, torch.zeros(1), mu, sigma).numpy(),
                               clipped_lognormal_log_prob(x, f, mu[0], sigma[0]).numpy(), rtol=1e-12)


def test_clipped_lognormal_mixture_samples_follow_the_density():
    samples = draw("clipped_lognormal_mixture", MIXTURE_RAW)
    fraction, weights, parts = truncated_lognormal_mixture(MIXTURE_RAW)
    assert (samples == 0).double().mean().item() == pytest.approx(fraction, abs=0.01)
    above = samples[samples > 0].numpy()
    assert above.min() >= 1e-4

    def cdf(v):
        return sum(w * (p.cdf(v) - p.cdf(1e-4)) / p.sf(1e-4) for w, p in zip(weights, parts, strict=True))
    assert stats.kstest(above, cdf).pvalue > 1e-3
    # the straight-through sample carries the component weights' and the point mass's gradient
    raw = MIXTURE_RAW.expand(256, -1).clone().requires_grad_()
    HEADS["clipped_lognormal_mixture"].rsample(raw, torch.Generator().manual_seed(1)).sum().backward()
    assert torch.all(raw.grad[:, :4].abs().sum(0) > 0) and torch.all(raw.grad[:, 4:].abs().sum(0) > 0)


def test_poisson_samples_have_the_rate():
    raw = torch.tensor([1.0])
    assert draw("poisson", raw).mean().item() == pytest.approx(HEADS["poisson"].params(raw)[0].item(), rel=0.03)


def test_the_exportable_special_functions_match_scipy_far_into_the_tails():
    """log_ndtr (through log erfc), log_i0e and lgamma are written with ONNX's basic ops: they match scipy
    to their stated accuracy and stay finite where a naive log(1 - erf) or log(i0) over- or underflows."""
    from scipy import special

    from lit_vae.models.distributions import lgamma, log_i0e, log_ndtr

    x = torch.linspace(-60, 40, 20001, dtype=torch.float64)
    np.testing.assert_allclose(log_ndtr(x).numpy(), special.log_ndtr(x.numpy()), rtol=2e-7, atol=2e-7)
    assert torch.isfinite(log_ndtr(torch.tensor([-60.0, 60.0]))).all()  # float32 too: no underflow
    kappa = torch.linspace(0, 5000, 50001, dtype=torch.float64)
    np.testing.assert_allclose(log_i0e(kappa).numpy(), np.log(special.i0e(kappa.numpy())), atol=1e-6)
    n = torch.arange(0, 2000, dtype=torch.float64) + 1
    np.testing.assert_allclose(lgamma(n).numpy(), special.gammaln(n.numpy()), rtol=1e-13, atol=1e-13)

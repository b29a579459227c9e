"""Probability densities for VAE decoders, the learnable latent prior, and Gaussian KL divergences.

Every log-density takes physical values (x > 0 for the clipped log-normal, integers n >= 0 for the
discrete Gaussian) and returns one number per event and feature. Heads map a decoder's raw outputs to
valid parameters with their own activations (sigma > 0 through a shifted softplus, fractions through a
sigmoid), as in Cerri et al.; the normalisations are exact, not first-order approximations.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)
LOG_2 = math.log(2.0)
SQRT_HALF = math.sqrt(0.5)
SIGMA_MIN = 1e-3
CLIP_THRESHOLD = 1e-4  # the clipped log-normal puts a point mass on x below this (the thesis's 10^-4)


def positive(raw: torch.Tensor, minimum: float = SIGMA_MIN) -> torch.Tensor:
    """A shifted softplus: smooth, strictly above minimum."""
    return F.softplus(raw) + minimum


# --- Special functions written with +, *, /, exp and log only: stable in the tails and exportable to ONNX
# (which has no log_ndtr, i0e or lgamma), so that a C++ analysis scores events as PyTorch does.

def log_erfc(z: torch.Tensor) -> torch.Tensor:
    """log erfc(z), to a relative error below 1.2e-7 in erfc everywhere and without underflow in the tail:
    Numerical Recipes' Chebyshev fit (erfcc) in log form for z >= 0, erfc(z) = 2 - erfc(-z) below."""
    a = z.abs()
    t = 1 / (1 + 0.5 * a)
    series = (-1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    log_upper = torch.log(t) - a * a + series  # log erfc(|z|)
    return torch.where(z >= 0, log_upper, torch.log(2 - torch.exp(log_upper)))


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """log Phi(x) of the standard normal, from log_erfc: finite for every finite x."""
    return log_erfc(-x * SQRT_HALF) - LOG_2


def log_i0e(kappa: torch.Tensor) -> torch.Tensor:
    """log(I0(kappa) exp(-kappa)) for kappa >= 0 (relative error below 2e-7): Abramowitz & Stegun 9.8.1 below
    3.75, 9.8.2 above; stable for any kappa."""
    t2 = (kappa / 3.75) ** 2
    small = torch.log(1 + t2 * (3.5156229 + t2 * (3.0899424 + t2 * (1.2067492 + t2 * (0.2659732 + t2 * (
        0.0360768 + t2 * 0.0045813)))))) - kappa
    u = 3.75 / torch.clamp(kappa, min=3.75)
    large = torch.log(0.39894228 + u * (0.01328592 + u * (0.00225319 + u * (-0.00157565 + u * (0.00916281 + u * (
        -0.02057706 + u * (0.02635537 + u * (-0.01647633 + u * 0.00392377)))))))) - 0.5 * torch.log(
        torch.clamp(kappa, min=3.75))
    return torch.where(kappa < 3.75, small, large)


LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
           12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7)


def lgamma(x: torch.Tensor) -> torch.Tensor:
    """log Gamma(x) for x >= 1/2 (the Poisson head's lgamma(n + 1)): Lanczos' approximation, g = 7."""
    z = x - 1
    series = LANCZOS[0] + sum(c / (z + i) for i, c in enumerate(LANCZOS[1:], start=1))
    t = z + 7.5
    return 0.5 * LOG_2PI + (z + 0.5) * torch.log(t) - t + torch.log(series)


# --- Densities -----------------------------------------------------------------------------------------

def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI


def truncated_lognormal_log_prob(x, mu, sigma, threshold: float = CLIP_THRESHOLD) -> torch.Tensor:
    """log of LogNormal(mu, sigma) truncated to x >= threshold (renormalised by its mass above the threshold);
    x is clamped to the threshold, so values below it give a finite number the caller replaces."""
    log_x = torch.log(torch.clamp(x, min=threshold))
    log_above = log_ndtr((mu - math.log(threshold)) / sigma)  # log P(LogNormal >= threshold)
    return gaussian_log_prob(log_x, mu, sigma) - log_x - log_above


def clipped_lognormal_log_prob(x, fraction, mu, sigma, threshold: float = CLIP_THRESHOLD) -> torch.Tensor:
    """log f(x): a point mass `fraction` below threshold, and (1 - fraction) x LogNormal(mu, sigma) truncated
    to x >= threshold, so that f integrates to 1."""
    continuous = torch.log1p(-fraction) + truncated_lognormal_log_prob(x, mu, sigma, threshold)
    return torch.where(x < threshold, torch.log(fraction), continuous)


def clipped_lognormal_mixture_log_prob(x, fraction, log_weights, mu, sigma,
                                       threshold: float = CLIP_THRESHOLD) -> torch.Tensor:
    """The clipped log-normal with a mixture of truncated log-normals above the threshold: log_weights, mu and
    sigma carry the components in a last dimension (log_weights normalised, e.g. by log_softmax)."""
    components = log_weights + truncated_lognormal_log_prob(x.unsqueeze(-1), mu, sigma, threshold)
    continuous = torch.log1p(-fraction) + torch.logsumexp(components, dim=-1)
    return torch.where(x < threshold, torch.log(fraction), continuous)


def _log_interval(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails (uses the symmetric form above the mode)."""
    upper = a > 0
    lo = torch.where(upper, -b, a)
    hi = torch.where(upper, -a, b)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(torch.clamp(log_lo - log_hi, max=-1e-12)))


def discrete_gaussian_log_prob(n: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log P(n) of a Gaussian integrated over [n - 1/2, n + 1/2] and normalised over n >= 0 exactly:
    P(n) = [Phi((n + 1/2 - mu)/sigma) - Phi((n - 1/2 - mu)/sigma)] / [1 - Phi((-1/2 - mu)/sigma)]."""
    a = (n - 0.5 - mu) / sigma
    b = (n + 0.5 - mu) / sigma
    log_norm = log_ndtr((mu + 0.5) / sigma)  # log(1 - Phi((-1/2 - mu)/sigma))
    return _log_interval(a, b) - log_norm


def bernoulli_log_prob(x, p):
    return x * torch.log(p) + (1 - x) * torch.log1p(-p)


def poisson_log_prob(n, rate):
    return n * torch.log(rate) - rate - lgamma(n + 1)


# --- KL divergences and the learnable prior ------------------------------------------------------------

def kl_standard_normal(mu: torch.Tensor, log_sigma: torch.Tensor, form: str = "true") -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent dimensions, per event.

    form='true': 1/2 sum(sigma^2 + mu^2 - 2 ln sigma - 1), the Gaussian KL.
    form='paper': sum(sigma^2 + mu^2 - ln sigma - 1) as printed in the Zgamma paper (eq. 3): not a KL
    (its minimum sits at sigma = 1/sqrt(2)); for reproducing the paper only.
    """
    sigma2 = torch.exp(2 * log_sigma)
    if form == "true":
        return 0.5 * (sigma2 + mu**2 - 2 * log_sigma - 1).sum(dim=-1)
    if form == "paper":
        return (sigma2 + mu**2 - log_sigma - 1).sum(dim=-1)
    raise ValueError(f"kl_form must be 'true' or 'paper', got '{form}'")


def kl_diagonal_gaussians(mu_q, log_sigma_q, mu_p, log_sigma_p) -> torch.Tensor:
    """KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)) for diagonal Gaussians, summed over dimensions."""
    ratio2 = torch.exp(2 * (log_sigma_q - log_sigma_p))
    return 0.5 * (ratio2 + ((mu_q - mu_p) / torch.exp(log_sigma_p)) ** 2 - 1 - 2 * (log_sigma_q - log_sigma_p)
                  ).sum(dim=-1)


class LearnablePrior(nn.Module):
    """A diagonal Gaussian prior N(mu_p, sigma_p) whose parameters are trained with the model."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(latent_dim))
        self.log_sigma = nn.Parameter(torch.zeros(latent_dim))

    def kl(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        return kl_diagonal_gaussians(mu, log_sigma, self.mu, self.log_sigma)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.from_noise(torch.randn(n, self.mu.numel(), generator=generator, device=self.mu.device))

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """Latent vectors from standard-normal noise (the generator's input in ONNX)."""
        return self.mu + torch.exp(self.log_sigma) * eps

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """z in the prior's standard-normal space: (z - mu_p) / sigma_p."""
        return (z - self.mu) / torch.exp(self.log_sigma)


# --- Per-feature heads: raw decoder outputs -> parameters -> log-density and samples ------------------

def truncated_lognormal_sample(mu: torch.Tensor, sigma: torch.Tensor,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """LogNormal(mu, sigma) truncated to x >= CLIP_THRESHOLD by inversion from the upper tail
    (z = -ndtri(v * Phi(-a)) >= a, a = (ln threshold - mu) / sigma); reparameterised in mu and sigma."""
    v = torch.rand(mu.shape, generator=generator, device=mu.device).clamp_min(torch.finfo(mu.dtype).tiny)
    lowest = (math.log(CLIP_THRESHOLD) - mu) / sigma
    z = torch.maximum(-torch.special.ndtri(v * torch.special.ndtr(-lowest)), lowest)
    return torch.exp(mu + sigma * z)


class Head:
    """A family of per-feature distributions: how many raw outputs, their activations, density, sampler."""

    n_params: int = 2

    def params(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, raw: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def rsample(self, raw: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The exact sample, with a gradient for an adversary (VAE+D): reparameterised where the sampler is
        (Gaussian, the log-normal's continuous part, the von Mises location), straight-through for discrete
        choices (forward the sample, backward the gradient of `surrogate`, e.g. the count's location)."""
        sample = self.sample(raw, generator)
        surrogate = self.surrogate(raw)
        return sample if surrogate is None else sample + (surrogate - surrogate.detach())

    def surrogate(self, raw: torch.Tensor) -> torch.Tensor | None:
        """What a discrete choice's gradient is taken from (None: the sampler is differentiable)."""
        return None


class GaussianHead(Head):
    def params(self, raw):
        return raw[..., 0], positive(raw[..., 1])

    def log_prob(self, x, raw):
        return gaussian_log_prob(x, *self.params(raw))

    def sample(self, raw, generator=None):
        mu, sigma = self.params(raw)
        return mu + sigma * torch.randn(mu.shape, generator=generator, device=mu.device)


class ClippedLogNormalHead(Head):
    n_params = 3

    def params(self, raw):
        fraction = torch.sigmoid(raw[..., 0]).clamp(1e-6, 1 - 1e-6)
        return fraction, raw[..., 1], positive(raw[..., 2])

    def log_prob(self, x, raw):
        return clipped_lognormal_log_prob(x, *self.params(raw))

    def sample(self, raw, generator=None):
        """0 with probability fraction, else the log-normal truncated to x >= threshold."""
        fraction, mu, sigma = self.params(raw)
        u = torch.rand(mu.shape, generator=generator, device=mu.device)
        value = truncated_lognormal_sample(mu, sigma, generator)
        return torch.where(u < fraction, torch.zeros_like(value), value)

    def surrogate(self, raw):
        """The point mass's choice: more mass at 0 lowers the mean by fraction x the log-normal mean."""
        fraction, mu, sigma = self.params(raw)
        return -fraction * torch.exp(mu + sigma**2 / 2).detach()


class ClippedLogNormalMixtureHead(Head):
    """The clipped log-normal with `components` truncated log-normals above the threshold: for features
    whose conditional density has an edge or several modes (mT's Jacobian peak at m_W, its ttbar tail)."""

    def __init__(self, components: int = 3):
        self.components = components
        self.n_params = 1 + 3 * components

    def params(self, raw):
        k = self.components
        fraction = torch.sigmoid(raw[..., 0]).clamp(1e-6, 1 - 1e-6)
        log_weights = torch.log_softmax(raw[..., 1:1 + k], dim=-1)
        return fraction, log_weights, raw[..., 1 + k:1 + 2 * k], positive(raw[..., 1 + 2 * k:])

    def log_prob(self, x, raw):
        return clipped_lognormal_mixture_log_prob(x, *self.params(raw))

    def sample(self, raw, generator=None):
        """0 with probability fraction, else a component drawn by its weight and its truncated log-normal."""
        fraction, log_weights, mu, sigma = self.params(raw)
        u = torch.rand(fraction.shape, generator=generator, device=raw.device)
        pick = torch.rand(fraction.shape, generator=generator, device=raw.device).unsqueeze(-1)
        index = (log_weights.exp().cumsum(-1) < pick).sum(-1, keepdim=True).clamp_max(self.components - 1)
        value = truncated_lognormal_sample(mu.gather(-1, index), sigma.gather(-1, index), generator).squeeze(-1)
        return torch.where(u < fraction, torch.zeros_like(value), value)

    def surrogate(self, raw):
        """The discrete choices (point mass, component): their gradient through the mean of the density."""
        fraction, log_weights, mu, sigma = self.params(raw)
        return (1 - fraction) * (log_weights.exp() * torch.exp(mu + sigma**2 / 2).detach()).sum(-1)


class DiscreteGaussianHead(Head):
    def params(self, raw):
        return raw[..., 0], positive(raw[..., 1], minimum=0.05)

    def log_prob(self, x, raw):
        return discrete_gaussian_log_prob(x, *self.params(raw))

    def sample(self, raw, generator=None):
        """Exact sampling of the truncated discrete Gaussian by inversion of its CDF on n >= 0."""
        mu, sigma = self.params(raw)
        u = torch.rand(mu.shape, generator=generator, device=mu.device)
        normal = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        lo = normal.cdf((-0.5 - mu) / sigma)
        z = normal.icdf((lo + u * (1 - lo)).clamp(1e-7, 1 - 1e-7))  # a Gaussian truncated at -1/2
        return torch.clamp(torch.round(mu + sigma * z), min=0).detach()

    def surrogate(self, raw):
        return self.params(raw)[0]


class BernoulliHead(Head):
    n_params = 1

    def params(self, raw):
        return (torch.sigmoid(raw[..., 0]).clamp(1e-6, 1 - 1e-6),)

    def log_prob(self, x, raw):
        return bernoulli_log_prob(x, *self.params(raw))

    def sample(self, raw, generator=None):
        (p,) = self.params(raw)
        return (torch.rand(p.shape, generator=generator, device=p.device) < p).to(p.dtype)

    def surrogate(self, raw):
        return self.params(raw)[0]


class PoissonHead(Head):
    n_params = 1

    def params(self, raw):
        return (positive(raw[..., 0]),)

    def log_prob(self, x, raw):
        return poisson_log_prob(x, *self.params(raw))

    def sample(self, raw, generator=None):
        (rate,) = self.params(raw)
        return torch.poisson(rate.detach(), generator=generator)

    def surrogate(self, raw):
        return self.params(raw)[0]


class VonMisesHead(Head):
    """A periodic density for angles: von Mises(loc, kappa) on [-pi, pi); samples are wrapped angles."""

    def params(self, raw):
        return raw[..., 0], positive(raw[..., 1])

    def log_prob(self, x, raw):
        loc, kappa = self.params(raw)
        # log I0(kappa) through the exponentially scaled Bessel function: stable for large kappa
        return kappa * (torch.cos(x - loc) - 1) - LOG_2PI - log_i0e(kappa)

    def sample(self, raw, generator=None):
        """Best & Fisher's (1979) rejection sampler, vectorised, in float64, from the seeded generator."""
        loc, kappa = (p.double() for p in self.params(raw))
        tau = 1 + torch.sqrt(1 + 4 * kappa**2)
        rho = (tau - torch.sqrt(2 * tau)) / (2 * kappa)
        r = (1 + rho**2) / (2 * rho)
        theta = torch.zeros_like(loc)
        pending = torch.ones_like(loc, dtype=torch.bool)
        while pending.any():
            u1, u2, u3 = (torch.rand(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
                          for _ in range(3))
            z = torch.cos(math.pi * u1)
            f = (1 + r * z) / (r + z)
            c = kappa * (r - f)
            accept = pending & ((c * (2 - c) - u2 > 0) | (torch.log(c / u2) + 1 - c >= 0))
            value = torch.sign(u3 - 0.5) * torch.acos(f.clamp(-1, 1))
            theta = torch.where(accept, value, theta)
            pending &= ~accept
        angle = torch.remainder(theta + loc + math.pi, 2 * math.pi) - math.pi
        return angle.to(raw.dtype)


HEADS: dict[str, Head] = {
    "gaussian": GaussianHead(), "clipped_lognormal": ClippedLogNormalHead(),
    "discrete_gaussian": DiscreteGaussianHead(), "bernoulli": BernoulliHead(), "poisson": PoissonHead(),
    "von_mises": VonMisesHead(), "clipped_lognormal_mixture": ClippedLogNormalMixtureHead(),
}
DEFAULT_HEAD = {"positive": "clipped_lognormal", "count": "discrete_gaussian", "real": "gaussian",
                "angle": "von_mises"}

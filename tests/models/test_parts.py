"""Model parts every model can take: the flow prior, the von Mises head, the flow decoder, the VAE+D
adversarial forms, and generation in the physics setup (exact derived features, relative azimuth, bounds)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy import stats
from scipy.special import expit, log_expit

from lit_vae.data import ZGammaDataModule
from lit_vae.data.transforms import FeatureTransform
from lit_vae.errors import ConfigError
from lit_vae.generation import Tally, _next_size, generate_columns
from lit_vae.models import VAE, VAED, LikelihoodVAE, load_model
from lit_vae.models.components import AutoregressiveDensityHead
from lit_vae.models.distributions import HEADS, SIGMA_MIN
from lit_vae.models.priors import FlowPrior


def test_flow_prior_density_integrates_to_one_in_2d():
    torch.manual_seed(0)
    prior = FlowPrior(2)
    with torch.no_grad():  # a non-trivial flow: random spline parameters
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
        grid = torch.linspace(-8, 8, 401, dtype=torch.float32)
        zz = torch.cartesian_prod(grid, grid)
        density = prior.log_prob(zz).exp().reshape(401, 401).double()
    integral = torch.trapezoid(torch.trapezoid(density, grid.double()), grid.double())
    assert integral.item() == pytest.approx(1.0, abs=5e-3)


def test_flow_prior_kl_is_log_q_minus_log_p():
    torch.manual_seed(1)
    prior = FlowPrior(3)
    mu, log_sigma, z = torch.randn(5, 3), 0.1 * torch.randn(5, 3), torch.randn(5, 3)
    log_q = stats.norm(mu.numpy(), log_sigma.exp().numpy()).logpdf(z.numpy()).sum(axis=1)
    expected = log_q - prior.log_prob(z).detach().numpy()
    np.testing.assert_allclose(prior.kl(mu, log_sigma, z).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_von_mises_head_against_scipy_and_wrapped_samples():
    raw = torch.tensor([[0.5, 2.0], [-2.8, 0.3], [3.0, 40.0]], dtype=torch.float64)
    loc, kappa = HEADS["von_mises"].params(raw)
    x = torch.tensor([0.1, 3.0, -3.1], dtype=torch.float64)
    expected = stats.vonmises(kappa.numpy(), loc=loc.numpy()).logpdf(x.numpy())
    # log I0 is Abramowitz & Stegun's polynomial (exportable to ONNX): 5e-7 at worst
    np.testing.assert_allclose(HEADS["von_mises"].log_prob(x, raw).numpy(), expected, rtol=0, atol=1e-6)
    generator = torch.Generator().manual_seed(3)
    many = raw[2:3].expand(20_000, 2)
    samples = HEADS["von_mises"].sample(many, generator).numpy()
    assert samples.min() >= -math.pi and samples.max() < math.pi
    # kappa = 40 around loc = 3.0 wraps across -pi: compare the circular mean and spread with scipy
    reference = stats.vonmises(float(kappa[2]), loc=float(loc[2]))
    assert stats.kstest(np.mod(samples - 3.0 + math.pi, 2 * math.pi),
                        lambda v: reference.cdf(v - math.pi + 3.0) - reference.cdf(-math.pi + 3.0)).pvalue > 1e-3


def test_non_saturating_adversarial_term_by_hand(wh1lbb_datamodule):
    dm = wh1lbb_datamodule
    model = VAED(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features, latent_dim=4,
                 n_nodes=16, adversarial_loss="non_saturating")
    torch.manual_seed(2)
    x, rec, gen = (torch.randn(7, dm.n_features) for _ in range(3))
    batch = {"weight": torch.ones(7)}
    logits = [model.discriminator(v).detach().double().numpy() for v in (rec, gen)]
    expected = sum(-log_expit(v).mean() for v in logits)
    assert model.adversarial_term(x, rec, gen, batch).item() == pytest.approx(expected, rel=1e-5)
    paper = VAED(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features, latent_dim=4,
                 n_nodes=16)
    paper.discriminator.load_state_dict(model.discriminator.state_dict())
    d = [paper.discriminator(v).detach().double().numpy() for v in (x, rec, gen)]
    by_hand = -(-log_expit(d[0]).mean() - np.log1p(-expit(d[1])).mean() - np.log1p(-expit(d[2])).mean())
    assert paper.adversarial_term(x, rec, gen, batch).item() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("decoder", ["likelihood", "autoregressive", "flow"])
def test_vae_d_discriminator_sees_exact_samples_whose_gradient_reaches_every_decoder_output(
        wh1lbb_datamodule, decoder):
    """Sampled heads under VAE+D: the discriminator's input is the exact sample (the straight-through and
    reparameterised parts add nothing forward), and its gradient reaches every head's first output
    (the point mass's fraction, the count's location: straight-through)."""
    dm = wh1lbb_datamodule
    model = VAED(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features, latent_dim=4,
                 n_nodes=16, decoder=decoder, flow_transforms=1, flow_hidden=16)
    model.transform.load_state_dict(dm.transform.state_dict())
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    seen = model.decoded(z)
    if decoder != "flow":
        torch.manual_seed(5)
        with torch.no_grad():
            exact = model.transform(model.decoder.sample(z, model.transform))
        torch.testing.assert_close(seen, exact)
    model.discriminator(seen).sum().backward()
    if decoder != "flow":  # every head's first raw output (fraction, location) gets a gradient
        first = np.cumsum([0, *model.decoder.n_params[:-1]])
        assert (model.decoder.net[-1].weight.grad[first].abs().sum(dim=1) > 0).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def test_autoregressive_head_is_a_normalised_joint_density_that_its_samples_follow():
    """p(n1, n2 | z) = f(n1 | z) f(n2 | z, n1) of two counts: it sums to one over the grid, the second count's
    distribution depends on the first (not a product), the first feature's on neither (MADE masks), and
    sample() draws the pairs with these probabilities (chi-square), conditioning on the transformed counts
    as the density does."""
    torch.manual_seed(0)
    head = AutoregressiveDensityHead(2, [16, 16], ["n1", "n2"], ["count", "count"])
    with torch.no_grad():  # a strongly conditioned head
        for p in head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    transform = FeatureTransform(["count", "count"], mean=[2.0, 1.0], std=[2.0, 1.0])
    z = torch.randn(1, 2, generator=torch.Generator().manual_seed(1))
    grid = torch.cartesian_prod(torch.arange(60.0), torch.arange(60.0))
    with torch.no_grad():
        nll = head.terms(z.expand(len(grid), 2), {"x": transform(grid), "target": grid}, transform)["nll"]
        first = head.raw_parameters(z.expand(2, 2), torch.tensor([[0.0, 0.0], [5.0, -3.0]]))[0]
    joint = torch.exp(-nll.double()).reshape(60, 60).numpy()
    assert joint.sum() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(first[0], first[1])  # the first feature sees z only
    likely = joint[joint.sum(axis=1) > 0.01]
    conditional = likely / likely.sum(axis=1, keepdims=True)
    assert np.abs(conditional[:, None] - conditional[None]).sum(-1).max() > 0.2
    with torch.no_grad():
        samples = head.sample(z.expand(20_000, 2), transform, torch.Generator().manual_seed(2)).long().numpy()
    observed = np.zeros((60, 60))
    np.add.at(observed, (samples[:, 0], samples[:, 1]), 1)
    expected = 20_000 * joint
    cells = expected >= 5
    assert observed[~cells].sum() < 0.02 * 20_000
    chi2 = ((observed[cells] - expected[cells]) ** 2 / expected[cells]).sum()
    assert stats.chi2(cells.sum() - 1).sf(chi2) > 1e-3


def test_an_autoregressive_decoder_narrower_than_the_features_is_refused():
    with pytest.raises(ConfigError, match="decoder: autoregressive needs hidden layers at least as wide as the 5 "
                                          r"features, got \[4, 4\]; raise n_nodes"):
        LikelihoodVAE(n_features=5, latent_dim=2, n_nodes=4, decoder="autoregressive")


def test_flow_passes_outside_two_to_n_features_is_refused():
    with pytest.raises(ConfigError, match=r"flow_passes must be null \(autoregressive\) or 2..3, got 4"):
        VAE(n_features=3, decoder="flow", flow_passes=4)


@pytest.fixture(scope="module")
def physics_data(tmp_path_factory):
    """The shipped Zgamma window in the physics setup (basis, relative azimuth), 3,000 events."""
    dm = ZGammaDataModule(derived_features="exact", azimuth="relative", max_events=3000, batch_size=256,
                          cache_dir=str(tmp_path_factory.mktemp("cache")), min_events=0)
    dm.setup()
    return dm


@pytest.mark.parametrize("decoder, prior", [("likelihood", "flow"), ("flow", "normal")])
def test_physics_setup_generates_events_that_obey_every_bound(physics_data, decoder, prior, tmp_path):
    """Two epochs, then generation: exact derived features, angles in [-pi, pi), every event inside the
    window and the declared preselection; a reloaded checkpoint gives identical events for a seed."""
    dm = physics_data
    assert "l1_phi" not in dm.features and "l2_pt" not in dm.features and "ph_pt" not in dm.features
    assert {"m_ll", "m_llg", "is_muon"} <= set(dm.features)
    L.seed_everything(0)
    model = VAE(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features, latent_dim=4,
                n_nodes=32, decoder=decoder, prior=prior, flow_transforms=2, flow_hidden=32, w1_events=0,
                flow_passes=2 if decoder == "flow" else None,  # a coupling flow decoder: samples in two passes
                heads={"is_muon": "bernoulli"} if decoder == "likelihood" else None)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    tally = Tally()
    batches = list(generate_columns(model, 2000, 1000, seed=4, tally=tally))
    events = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert len(events["m_llg"]) == 2000 and tally.sampled >= 2000
    assert ((events["m_llg"] > 132) & (events["m_llg"] < 168)).all()
    assert (events["l2_pt"] <= events["l1_pt"]).all() and (events["n_cjets"] <= events["n_jets"]).all()
    for name in ("l1_phi", "l2_phi", "ph_phi", "met_phi"):
        assert events[name].min() >= -math.pi and events[name].max() < math.pi
    np.testing.assert_allclose(events["l1_e"], np.sqrt((events["l1_pt"] * np.cosh(events["l1_eta"])) ** 2
                                                       + np.where(events["is_muon"] == 1, 0.1056584, 0.000511) ** 2),
                               rtol=1e-5)
    # l2_pt and ph_pt follow from the modelled masses: the four-vectors give back m_ll and m_llg.
    four = [np.stack([events[f"{o}_e"], *(events[f"{o}_pt"] * f(events[f"{o}_{a}"]) for f, a in
                      ((np.cos, "phi"), (np.sin, "phi"), (np.sinh, "eta")))]) for o in ("l1", "l2", "ph")]
    for parts, name in ((four[:2], "m_ll"), (four, "m_llg")):
        e, px, py, pz = sum(parts)
        np.testing.assert_allclose(np.sqrt(e**2 - px**2 - py**2 - pz**2), events[name], rtol=1e-3)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    again = list(generate_columns(load_model(str(path)).eval(), 2000, 1000, seed=4))
    for key in events:
        np.testing.assert_array_equal(np.concatenate([b[key] for b in again]), events[key])


def test_likelihood_vae_keeps_the_thesis_preset():
    model = LikelihoodVAE(n_features=2, feature_kinds=["positive", "count"], feature_names=["met", "njet"],
                          latent_dim=2, n_nodes=8)
    assert type(model.prior).__name__ == "LearnableGaussianPrior"
    assert model.decoder.head_names == ["clipped_lognormal", "discrete_gaussian"]


def test_generation_samples_what_the_missing_events_need():
    """Batch sizes follow the acceptance seen so far (+10 %, at least 1,024, at most batch_size)."""
    half = Tally(sampled=1000, accepted=500)
    assert _next_size(10_000, 100_000, half) == 22_001
    assert _next_size(10, 100_000, half) == 1024
    assert _next_size(10**7, 100_000, half) == 100_000
    assert _next_size(3000, 100_000, Tally()) == 3301
    assert _next_size(5, 100_000, Tally(sampled=10**6, accepted=0)) == 5501  # acceptance floored at 1e-3


@pytest.mark.parametrize("cls", [VAE, VAED])
def test_an_optimizer_lr_that_contradicts_learning_rate_is_refused(cls):
    """learning_rate sets every optimiser's rate; an lr given to the optimizer itself must agree with it."""
    def adam(lr):
        return lambda parameters: torch.optim.Adam(parameters, lr=lr)

    with pytest.raises(ConfigError, match=r"optimizer.init_args.lr = 0.5 contradicts .*learning_rate = 0.002"):
        cls(n_features=3, learning_rate=2e-3, optimizer=adam(0.5)).configure_optimizers()
    for optimizer in (adam(2e-3), torch.optim.Adam):
        configured = cls(n_features=3, learning_rate=2e-3, optimizer=optimizer).configure_optimizers()
        optimizers = configured if isinstance(configured, list) else [configured]
        assert {g["lr"] for o in optimizers for g in o.param_groups} == {2e-3}


@pytest.mark.parametrize("cls", [VAE, VAED])
def test_a_non_finite_loss_stops_training_in_one_line_or_skips_the_batch(cls, tmp_path):
    """nan_policy 'stop' (default): NumericalError naming epoch, step and part, also when the check is left on
    the device (as on a GPU: made at the epoch's end here) and before any checkpoint is written; 'skip': the
    batch is skipped, counted, and the weights stay finite."""
    from lit_vae.errors import NumericalError

    generator = torch.Generator().manual_seed(3)
    good = [{"x": torch.randn(32, 3, generator=generator), "weight": torch.ones(32)} for _ in range(3)]
    bad = {"x": good[0]["x"].clone(), "weight": torch.ones(32)}
    bad["x"][5, 1] = float("inf")
    batches = torch.utils.data.DataLoader([good[0], good[1], bad, good[2]], batch_size=None)  # batches as they are
    for policy, deferred in (("stop", False), ("stop", True), ("skip", False)):
        L.seed_everything(0)
        model = cls(n_features=3, latent_dim=2, n_nodes=8, w1_events=0, nan_policy=policy)
        model.defer_finite_checks = deferred
        folder = tmp_path / f"{policy}-{deferred}"
        every_3_steps = ModelCheckpoint(dirpath=folder, every_n_train_steps=3, save_top_k=-1)  # after the bad batch
        trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[every_3_steps], enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", default_root_dir=folder,
                            limit_val_batches=0)
        if policy == "stop":
            with pytest.raises(NumericalError, match=r"non-finite training loss \(\w+.*\) at epoch 0, step 2[ ;]"):
                trainer.fit(model, train_dataloaders=batches)
            assert not list(folder.rglob("*.ckpt"))  # no checkpoint holds the non-finite weights
        else:
            trainer.fit(model, train_dataloaders=batches)
            assert trainer.callback_metrics["train/skipped_batches"].item() == 1
            assert all(torch.isfinite(p).all() for p in model.parameters())


def test_iwae_score_is_minus_log_p_x_by_a_grid_integral_and_below_the_elbo_bound():
    """-log p(x) of a small likelihood VAE: the importance-weighted estimate (K = 65,536) agrees with the
    integral of p(x|z) N(z; 0, 1) over a 2-D grid of latent points (numpy), and lies below the -ELBO bound."""
    torch.manual_seed(0)
    model = LikelihoodVAE(n_features=2, feature_kinds=["real", "real"], latent_dim=2, n_nodes=8, prior="normal",
                          iwae_samples=65536).double().eval()
    x = torch.tensor([[0.3, -1.2], [2.5, 0.4], [-0.7, 0.1]], dtype=torch.float64)
    batch = {"x": x, "target": x, "weight": torch.ones(3, dtype=torch.float64)}
    scores = model.score(batch)
    axis = np.linspace(-8, 8, 641)
    grid = torch.from_numpy(np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2))
    log_prior = -0.5 * (grid**2).sum(-1).numpy() - np.log(2 * np.pi) + 2 * np.log(axis[1] - axis[0])
    with torch.no_grad():
        integral = []
        for row in x:
            tiled = {"x": row.expand(len(grid), 2), "target": row.expand(len(grid), 2)}
            log_px = -model.decoder.terms(grid, tiled, model.transform)["nll"].numpy()
            integral.append(-np.logaddexp.reduce(log_px + log_prior))
    np.testing.assert_allclose(scores["iwae"].numpy(), integral, atol=0.01)
    assert (scores["iwae"] <= scores["recon"] + scores["kl"] + 1e-9).all()  # -ELBO at the posterior mean
    assert (scores["latent_radius"] >= 0).all() and torch.allclose(scores["latent_radius"],
                                                                     scores["latent_mahalanobis"])
    _, mu, _ = model.encode(x, deterministic=True)
    expected_prior_nll = 0.5 * (mu**2).sum(-1) + np.log(2 * np.pi)
    torch.testing.assert_close(scores["prior_nll"], expected_prior_nll)
    # on the same K draws the log-mean-exp is at least their mean (the ELBO estimate): Jensen
    _, mu, log_sigma = model.encode(x, deterministic=True)
    log_w = model.log_importance_weights(batch, mu, log_sigma, 16)
    assert (torch.logsumexp(log_w, 0) - np.log(16) >= log_w.mean(0)).all()
    torch.testing.assert_close(model.iwae_nll(batch, mu, log_sigma, 16), -(torch.logsumexp(log_w, 0) - np.log(16)))


def test_iwae_converges_to_the_closed_form_likelihood_of_a_linear_gaussian_vae():
    """p(x|z) = N(Wz + b, diag s^2) under N(0, 1) has p(x) = N(b, W W^T + diag s^2) (scipy); the importance-
    weighted -log p(x) approaches it as K grows, from above (a bound on average)."""
    torch.manual_seed(2)
    model = LikelihoodVAE(n_features=3, feature_kinds=["real"] * 3, latent_dim=2, n_nodes=8, prior="normal").double()
    weight, bias = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    spread = torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64)
    linear = torch.nn.Linear(2, 6).double()  # per feature: the Gaussian head's (mean, raw sigma)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0::2] = weight
        linear.bias[0::2] = bias
        linear.bias[1::2] = torch.log(torch.expm1(spread - SIGMA_MIN))  # positive(raw) = softplus(raw) + SIGMA_MIN
    model.decoder.net = torch.nn.Sequential(linear)
    model.eval()
    x = torch.tensor([[0.3, -1.2, 0.5], [2.5, 0.4, -1.0], [-0.7, 0.1, 1.9], [0.0, 0.0, 0.0]], dtype=torch.float64)
    batch = {"x": x, "target": x, "weight": torch.ones(4, dtype=torch.float64)}
    covariance = (weight @ weight.T + torch.diag(spread**2)).numpy()
    exact = -stats.multivariate_normal(bias.numpy(), covariance).logpdf(x.numpy())
    # the proposal: the exact posterior's mean with its marginal spreads, widened (a diagonal, imperfect q)
    precision = torch.eye(2, dtype=torch.float64) + weight.T @ torch.diag(spread**-2) @ weight
    posterior = torch.linalg.inv(precision)
    mu = (x - bias) @ torch.diag(spread**-2) @ weight @ posterior
    log_sigma = torch.log(1.5 * posterior.diagonal().sqrt()).expand(4, 2)
    copies = {key: value.repeat(500, 1) for key, value in batch.items() if key != "weight"}  # other noise each
    with torch.no_grad():  # the bound's gap, averaged over the noise of 500 copies of each event
        gaps = [(model.iwae_nll(copies, mu.repeat(500, 1), log_sigma.repeat(500, 1), k).numpy()
                 - np.tile(exact, 500)).mean() for k in (1, 4, 16, 64)]
        converged = model.iwae_nll(batch, mu, log_sigma, 65536).numpy()
    assert gaps[-1] > 0 and all(np.diff(gaps) < 0), gaps  # an upper bound that tightens
    np.testing.assert_allclose(converged, exact, atol=5e-3)


@pytest.mark.parametrize("name, column", [("total", "total"), ("nll", "recon"), ("kl", "kl"),
                                          ("latent_radius", "latent_radius"), ("prior_density", "prior_nll"),
                                          ("iwae", "iwae")])
def test_the_score_column_is_the_chosen_anomaly_score(name, column):
    torch.manual_seed(1)
    model = LikelihoodVAE(n_features=2, feature_kinds=["positive", "count"], latent_dim=2, n_nodes=8,
                          iwae_samples=8, anomaly_score=name).eval()
    x = torch.tensor([[1.5, 2.0], [0.2, 0.0], [7.0, 5.0]])
    scores = model.score({"x": model.transform(x), "target": x, "weight": torch.ones(3)})
    torch.testing.assert_close(scores["score"], scores[column])
    assert {"total", "recon", "kl", "latent_radius", "latent_mahalanobis", "prior_nll", "iwae", "nll_x0"} <= set(scores)


def test_an_importance_weighted_score_needs_a_density_decoder():
    with pytest.raises(ConfigError, match="anomaly_score: iwae needs a density decoder"):
        VAE(n_features=3, anomaly_score="iwae")
    mse = VAE(n_features=3, anomaly_score="nll").eval()  # the MSE head's nll is its reconstruction term
    batch = {"x": torch.randn(4, 3, generator=torch.Generator().manual_seed(2)), "weight": torch.ones(4)}
    batch["target"] = batch["x"]
    scores = mse.score(batch)
    torch.testing.assert_close(scores["score"], scores["recon"])
    assert "iwae" not in scores


@pytest.mark.parametrize("decoder", ["likelihood", "autoregressive"])
def test_a_mixture_head_starts_at_the_marginal_quantiles_and_scores_in_either_density_decoder(decoder):
    """heads: {feature: clipped_lognormal_mixture}: equal weights, locations at the training marginal's
    (k + 1/2)/K quantiles of log x; the decoder's nll is that head's log-density of the target."""
    generator = torch.Generator().manual_seed(3)
    target = torch.cat([torch.zeros(50), torch.exp(3 + 0.5 * torch.randn(950, generator=generator))])[:, None]
    model = LikelihoodVAE(n_features=1, feature_names=["mt"], feature_kinds=["positive"], decoder=decoder,
                          heads={"mt": "clipped_lognormal_mixture"}, n_nodes=8)
    model.decoder.initialise_output_bias(target)
    bias = model.decoder.net[-1].bias.detach().double()
    k = HEADS["clipped_lognormal_mixture"].components
    log_x = np.log(target[50:, 0].double().numpy())
    assert bias[0].item() == pytest.approx(np.log(0.05 / 0.95), rel=1e-5)
    np.testing.assert_allclose(bias[1:1 + k].numpy(), 0.0)
    np.testing.assert_allclose(bias[1 + k:1 + 2 * k].numpy(), np.quantile(log_x, (np.arange(k) + 0.5) / k), rtol=1e-5)
    z, x = torch.randn(4, model.hparams.latent_dim, generator=generator), target[:4]
    raw = model.decoder.raw_parameters(z, torch.log1p(x))[0]
    terms = model.decoder.terms(z, {"x": torch.log1p(x), "target": x}, transform=None)
    np.testing.assert_allclose(terms["nll"].detach().numpy(),
                               -HEADS["clipped_lognormal_mixture"].log_prob(x[:, 0], raw).detach().numpy(), rtol=1e-6)


def test_a_mixture_head_starts_from_a_training_part_beyond_torch_quantiles_limit():
    """More than 2^24 training values (torch.quantile refuses them): the locations come from a strided subset
    and still sit at the whole marginal's quantiles (numpy, every value)."""
    from lit_vae.models.components import QUANTILE_LIMIT

    generator = torch.Generator().manual_seed(5)
    target = torch.exp(3 + 0.5 * torch.randn(QUANTILE_LIMIT + 7, 1, generator=generator))
    model = LikelihoodVAE(n_features=1, feature_names=["mt"], feature_kinds=["positive"],
                          heads={"mt": "clipped_lognormal_mixture"}, n_nodes=8)
    model.decoder.initialise_output_bias(target)
    k = HEADS["clipped_lognormal_mixture"].components
    expected = np.quantile(np.log(target[:, 0].double().numpy()), (np.arange(k) + 0.5) / k)
    np.testing.assert_allclose(model.decoder.net[-1].bias[1 + k:1 + 2 * k].detach().double().numpy(), expected,
                               atol=2e-3)


def test_weights_a_non_finite_gradient_reached_are_never_checkpointed():
    from lit_vae.errors import NumericalError

    model = VAE(n_features=3, latent_dim=2, n_nodes=8, w1_events=0)
    model.on_save_checkpoint({})  # finite weights: no objection
    with torch.no_grad():
        model.decoder.net[-1].bias[0] = float("nan")
    with pytest.raises(NumericalError, match="weights hold non-finite values .* no checkpoint written"):
        model.on_save_checkpoint({})


def test_the_training_noise_state_round_trips_in_both_checkpoint_formats():
    """noise_state / set_noise_state restore the stream a draw continues from (a dict now; a bare CPU state
    tensor in checkpoints written before GPU streams were kept)."""
    from lit_vae.models.base import noise_state, set_noise_state

    torch.manual_seed(11)
    state = noise_state(torch.device("cpu"))
    expected = torch.rand(5)
    for saved in (state, state["cpu"]):
        torch.manual_seed(99)
        set_noise_state(saved, torch.device("cpu"))
        assert torch.equal(torch.rand(5), expected)

"""The three models: losses by hand, VAE+D's optimiser isolation and step count, sampling, checkpoints."""

from __future__ import annotations

import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
from scipy import stats

from lit_vae.errors import ConfigError
from lit_vae.models import VAE, VAED, LikelihoodVAE, load_model


def build(cls, dm, **kwargs):
    return cls(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features,
               latent_dim=4, n_nodes=16, **kwargs)


def trainer(**kwargs) -> L.Trainer:
    options = dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu")
    return L.Trainer(**{**options, **kwargs})


def test_vae_loss_by_hand(wh1lbb_datamodule):
    model = build(VAE, wh1lbb_datamodule, beta=2.5)
    batch = next(iter(wh1lbb_datamodule.val_dataloader()))
    torch.manual_seed(0)
    parts = model.losses(batch)
    torch.manual_seed(0)
    x = batch["x"]
    mu, log_sigma = model.encoder(x)
    z = mu + log_sigma.exp() * torch.randn_like(mu)
    mse = ((model.decoder(z) - x) ** 2).mean(dim=1)  # over features
    kl = 0.5 * (torch.exp(2 * log_sigma) + mu**2 - 2 * log_sigma - 1).sum(dim=1)  # over latent dimensions
    torch.testing.assert_close(parts["recon"], mse)
    torch.testing.assert_close(parts["kl"], kl)
    torch.testing.assert_close(parts["loss"], mse + 2.5 * kl)
    torch.testing.assert_close(parts["elbo"], mse + kl)
    # The batch loss is the weight-averaged event loss.
    w = batch["weight"]
    torch.testing.assert_close(model.weighted_mean(parts["loss"], batch), (parts["loss"] * w).sum() / w.sum())


def test_likelihood_vae_nll_by_hand_with_scipy(wh1lbb_datamodule):
    model = build(LikelihoodVAE, wh1lbb_datamodule, beta=0.5, feature_weights={"met": 2.0})
    batch = next(iter(wh1lbb_datamodule.val_dataloader()))
    torch.manual_seed(1)
    parts = model.losses(batch)
    torch.manual_seed(1)
    mu, log_sigma = model.encoder(batch["x"])
    raw = model.decoder.raw_parameters(mu + log_sigma.exp() * torch.randn_like(mu))
    target = batch["target"].double().numpy()
    nll = np.zeros_like(target)
    for j, head in enumerate(model.decoder.head_names):
        p = [t.detach().double().numpy() for t in model_head_params(head, raw[j])]
        if head == "clipped_lognormal":  # every target here is far above the clip threshold
            nll[:, j] = -(np.log1p(-p[0]) + stats.lognorm.logpdf(target[:, j], s=p[2], scale=np.exp(p[1])))
        else:
            norm = stats.norm.sf(-0.5, loc=p[0], scale=p[1])
            mass = stats.norm.cdf(target[:, j] + 0.5, p[0], p[1]) - stats.norm.cdf(target[:, j] - 0.5, p[0], p[1])
            nll[:, j] = -np.log(mass / norm)
    weights = np.array([2.0] + [1.0] * 7)
    kl = stats_kl(mu, log_sigma, model.prior)
    np.testing.assert_allclose(parts["recon"].detach().numpy(), (nll * weights).sum(1), rtol=1e-4)
    np.testing.assert_allclose(parts["kl"].detach().numpy(), kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(parts["loss"].detach().numpy(), (nll * weights).sum(1) + 0.5 * kl, rtol=1e-4)
    np.testing.assert_allclose(parts["elbo"].detach().numpy(), nll.sum(1) + kl, rtol=1e-4)
    assert model.decoder.head_names == ["clipped_lognormal"] * 6 + ["discrete_gaussian"] * 2


def model_head_params(head: str, raw: torch.Tensor):
    from lit_vae.models.distributions import HEADS

    return HEADS[head].params(raw)


def stats_kl(mu, log_sigma, prior) -> np.ndarray:
    q = torch.distributions.Normal(mu, log_sigma.exp())
    p = torch.distributions.Normal(prior.mu, prior.log_sigma.exp())
    return torch.distributions.kl_divergence(q, p).sum(-1).detach().numpy()


class RecordingVAED(VAED):
    """Records which networks each optimiser step changed."""

    def _step(self, optimizer, loss_fn, counted, name):
        nets = {"encoder": self.encoder, "decoder": self.decoder, "discriminator": self.discriminator}
        before = {k: [p.detach().clone() for p in n.parameters()] for k, n in nets.items()}
        loss = super()._step(optimizer, loss_fn, counted, name)
        changed = {k for k, n in nets.items() if any(not torch.equal(a, p) for a, p in zip(before[k], n.parameters(),
                                                                                              strict=True))}
        self.record.append(changed)
        return loss


def test_vae_d_each_optimiser_changes_only_its_network_and_steps_count_batches(wh1lbb_datamodule):
    model = build(RecordingVAED, wh1lbb_datamodule, gamma=3.0, gradient_clip_val=1.0)
    model.record = []
    fit = trainer(max_steps=4)
    fit.fit(model, datamodule=wh1lbb_datamodule)
    assert fit.global_step == 4  # batches, not optimiser steps
    assert model.record[:3] == [{"discriminator"}, {"decoder"}, {"encoder"}]
    assert len(model.record) == 12 and model.record[9:] == [{"discriminator"}, {"decoder"}, {"encoder"}]


def test_vae_d_val_loss_is_its_objective(wh1lbb_datamodule):
    model = build(VAED, wh1lbb_datamodule, gamma=3.0, beta=0.5)
    batch = next(iter(wh1lbb_datamodule.val_dataloader()))
    parts = model.losses(batch)
    torch.testing.assert_close(parts["loss"], 3.0 * parts["recon"] + 0.5 * parts["kl"])


@pytest.mark.parametrize("cls", [VAE, LikelihoodVAE])
def test_samples_are_physical(wh1lbb_datamodule, cls):
    model = build(cls, wh1lbb_datamodule)
    trainer().fit(model, datamodule=wh1lbb_datamodule)
    events = model.sample(2000, torch.Generator().manual_seed(3)).numpy()
    assert events.shape == (2000, 8) and np.isfinite(events).all()
    assert np.all(events[:, :6] >= 0)  # positive features
    counts = events[:, 6:]
    assert np.array_equal(counts, np.round(counts)) and np.all(counts >= 0)
    again = model.sample(2000, torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(events, again)  # the generator's seed fixes the sample


def test_angles_come_back_in_range():
    model = VAE(n_features=2, feature_kinds=["angle", "real"], latent_dim=2, n_nodes=8)
    events = model.sample(5000, torch.Generator().manual_seed(0)).numpy()
    assert np.all((events[:, 0] >= -np.pi) & (events[:, 0] < np.pi))


def test_plausibility_and_bad_arguments():
    with pytest.raises(ConfigError, match="implausible architecture: hidden layers \\[16, 16\\] are narrower than "
                                          "latent_dim = 32"):
        VAE(n_features=4, latent_dim=32, n_nodes=16)
    with pytest.raises(ConfigError, match="unknown activation 'relux'"):
        VAE(n_features=4, activation="relux")
    with pytest.raises(ConfigError, match="heads.met: unknown head 'lognormal'"):
        LikelihoodVAE(n_features=1, feature_names=["met"], feature_kinds=["positive"], heads={"met": "lognormal"})


def test_checkpoint_reloads_in_a_fresh_process_with_identical_scores(wh1lbb_datamodule, tmp_path):
    model = build(LikelihoodVAE, wh1lbb_datamodule)
    fit = trainer()
    fit.fit(model, datamodule=wh1lbb_datamodule)
    fit.save_checkpoint(tmp_path / "model.ckpt")
    batch = next(iter(wh1lbb_datamodule.predict_dataloader()))
    torch.save(batch, tmp_path / "batch.pt")
    model.eval()
    expected = model.score(batch)["score"]
    torch.testing.assert_close(model.score(batch)["score"], expected)  # deterministic: the posterior mean
    script = (
        "import torch, sys\n"
        "from lit_vae.models import load_model\n"
        f"model = load_model('{tmp_path / 'model.ckpt'}')\n"
        "model.eval()\n"
        "assert type(model).__name__ == 'LikelihoodVAE'\n"
        f"batch = torch.load('{tmp_path / 'batch.pt'}')\n"
        f"torch.save(model.score(batch)['score'], '{tmp_path / 'scores.pt'}')\n"
        "print(model.transform.state()['mean'][:2], model.manifest_hash)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "scores.pt"), expected)
    assert wh1lbb_datamodule.manifest.content_hash in result.stdout
    reloaded = load_model(str(tmp_path / "model.ckpt"))
    torch.testing.assert_close(reloaded.transform.mean, wh1lbb_datamodule.transform.mean)


class ValLossHistory(L.Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module):  # after the module logged its epoch metrics
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/loss"]))


@pytest.mark.slow
@pytest.mark.parametrize("cls, data", [(VAE, "zgamma"), (VAED, "zgamma"), (LikelihoodVAE, "wh1lbb")])
def test_validation_loss_falls_on_the_shipped_sample(cls, data, tmp_path):
    from lit_vae.data import Wh1LbbDataModule, ZGammaDataModule

    torch.manual_seed(0)
    options = dict(batch_size=256, cache_dir=str(tmp_path), min_events=0, max_events=20_000)
    dm = ZGammaDataModule(**options) if data == "zgamma" else Wh1LbbDataModule(region="preselection", **options)
    extra = {VAE: {"beta": 0.01}, VAED: {"gamma": 100.0}}.get(cls, {})  # the shipped configs' balance
    model = cls(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features,
                latent_dim=8, n_nodes=64, **extra)
    history = ValLossHistory()
    trainer(max_epochs=4, callbacks=[history], num_sanity_val_steps=0).fit(model, datamodule=dm)
    assert len(history.values) == 4 and history.values[-1] < history.values[0], history.values

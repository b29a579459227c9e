"""What every lit-vae model shares: hyper-parameters as init args, the fitted transform carried in the
checkpoint, event-weighted losses, the common metric names, and `sample` / `score`.

A model is an encoder, a latent prior (`prior: normal | learnable | flow`, models/priors.py) and a decoder
head (`decoder: mse | likelihood | autoregressive | flow`, models/components.py); VAE, VAE+D and the likelihood VAE are
presets of these parts with the sources' choices as defaults (`preset`; `decoder: null` or `prior: null`
in a config means the preset's part).
Metrics: train/loss, val/loss (the objective, default monitor), val/elbo (beta = 1), val/recon, val/kl;
generators add val/w1_mean (mean 1-D Wasserstein-1 of generated vs validation events, standardised).
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from scipy.stats import wasserstein_distance
from torchmetrics import MeanMetric

from lit_vae.data.transforms import FeatureTransform
from lit_vae.errors import ConfigError, NumericalError
from lit_vae.models.components import GaussianEncoder, build_decoder, check_plausible, hidden_sizes, reparameterise
from lit_vae.models.distributions import LOG_2PI
from lit_vae.models.priors import build_prior

VAL_METRICS = ("loss", "elbo", "recon", "kl")
VALIDATION_SEED = 20_240_101  # the fixed noise of every validation pass
IWAE_SEED = 20_240_102  # the fixed noise of the importance-weighted score
NON_FINITE_ADVICE = ("the last checkpoint is intact. Lower the learning rate, clip gradients, check the inputs, or "
                     "set --model.init_args.nan_policy=skip")
# anomaly_score -> the column of score_suite it names (nll: the reconstruction term recon, the MSE for an MSE head)
SCORE_COLUMNS = {"total": "total", "nll": "recon", "kl": "kl", "latent_radius": "latent_radius",
                 "prior_density": "prior_nll", "iwae": "iwae"}


class BaseVAE(L.LightningModule):
    """Common machinery of the VAE family; see the module docstring."""

    is_generator = True
    preset = {"decoder": "mse", "prior": "normal"}  # the parts a model takes when its config names none

    def __init__(self, n_features: int, feature_kinds: list[str] | None = None,
                 feature_names: list[str] | None = None, latent_dim: int = 8, n_hidden_layers: int = 2,
                 n_nodes: int = 64, hidden: list[int] | None = None, activation: str = "relu",
                 learning_rate: float = 1e-3, beta: float = 1.0, use_weights: bool = True,
                 optimizer: OptimizerCallable = torch.optim.Adam, lr_scheduler: LRSchedulerCallable | None = None,
                 w1_events: int = 10_000, decoder: Literal["mse", "likelihood", "autoregressive", "flow"] | None = None,
                 prior: Literal["normal", "learnable", "flow"] | None = None,
                 kl_form: Literal["true", "paper"] = "true",
                 heads: dict[str, str] | None = None, feature_weights: dict[str, float] | None = None,
                 flow_transforms: int = 5, flow_hidden: int = 128, flow_passes: int | None = None,
                 nan_policy: Literal["stop", "skip"] = "stop", iwae_samples: int = 64,
                 anomaly_score: Literal["total", "nll", "kl", "latent_radius", "prior_density", "iwae"] = "total"):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.feature_kinds = list(feature_kinds or ["real"] * n_features)
        self.feature_names = list(feature_names or [f"x{i}" for i in range(n_features)])
        if len(self.feature_kinds) != n_features or len(self.feature_names) != n_features:
            raise ConfigError(f"n_features = {n_features} but {len(self.feature_kinds)} kinds and "
                              f"{len(self.feature_names)} names were given")
        if learning_rate <= 0 or beta < 0:
            raise ConfigError(f"learning_rate must be > 0 and beta >= 0, got {learning_rate} and {beta}")
        self.sizes = hidden_sizes(n_hidden_layers, n_nodes, hidden)
        check_plausible(self.sizes, latent_dim)
        self.n_features, self.latent_dim, self.activation = n_features, latent_dim, activation
        self.learning_rate, self.beta, self.use_weights, self.w1_events = learning_rate, beta, use_weights, w1_events
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.transform = FeatureTransform(self.feature_kinds)
        self.kl_form = kl_form
        self.nan_policy = nan_policy  # a non-finite training loss: stop with one line, or skip the batch
        if iwae_samples < 0:
            raise ConfigError(f"iwae_samples must be >= 0 (0: no importance-weighted score), got {iwae_samples}")
        self.iwae_samples = iwae_samples
        self.encoder = GaussianEncoder(n_features, self.sizes, latent_dim, activation)
        decoder, prior = decoder or self.preset["decoder"], prior or self.preset["prior"]
        self.decoder = build_decoder(decoder, latent_dim, self.sizes, self.feature_names, self.feature_kinds,
                                     activation, heads, feature_weights, flow_transforms, flow_hidden, flow_passes)
        self.prior = build_prior(prior, latent_dim, kl_form)
        if anomaly_score == "iwae" and not (self.decoder.is_density and iwae_samples):
            raise ConfigError("anomaly_score: iwae needs a density decoder (decoder: likelihood or autoregressive) "
                              "and iwae_samples > 0; choose total, nll, kl, latent_radius or prior_density")
        self.anomaly_score = anomaly_score  # the score column of `predict` (every other score is beside it)
        self.manifest_hash = ""
        self.data_split: dict = {}  # EventDataModule.split(): which events were trained on, which held out
        self.physics: dict = {}  # the DataModule's Physics state: how generated events are completed
        self.val_means = torch.nn.ModuleDict({k: MeanMetric() for k in VAL_METRICS})
        self.test_means = torch.nn.ModuleDict({k: MeanMetric() for k in ("background", "signal")})
        self.train_means: dict[str, MeanMetric] = {}
        self._val_x: list[torch.Tensor] = []
        self._unchecked: list[tuple[int, str, torch.Tensor]] = []  # (step, loss, finite?) left on the device
        self.defer_finite_checks: bool | None = None  # None: on an accelerator only (see finite)
        self._training_rng: dict | None = None  # the training noise streams, set aside during validation
        self._resumed_rng: dict | torch.Tensor | None = None  # a checkpoint's training noise, set at train start

    # --- data the model carries ---------------------------------------------------------------------
    def _setup_data(self, stage: str) -> None:
        """Take the fitted transform, the data split and the physics from the DataModule (fit only)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "transform", None) is None and stage == "fit":
            datamodule.setup(stage)
        if datamodule is not None and datamodule.transform is not None and stage == "fit":
            self.transform.load_state_dict(datamodule.transform.state_dict())
            self.manifest_hash = datamodule.manifest.content_hash
            self.data_split = datamodule.split()
            self.physics = datamodule.physics.state()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Refuse (before any file is opened) weights that a non-finite loss or gradient has reached."""
        self.check_finite()
        if not torch.stack([torch.isfinite(p).all() for p in self.parameters()]).all():
            raise NumericalError(f"the weights hold non-finite values at epoch {self.current_epoch}, step "
                                 f"{self.global_step} (a non-finite gradient?): no checkpoint written; "
                                 f"{NON_FINITE_ADVICE}")
        checkpoint["lit_vae"] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "feature_names": self.feature_names, "feature_kinds": self.feature_kinds,
            "manifest_hash": self.manifest_hash, "transform": self.transform.state(), "data_split": self.data_split,
            "physics": self.physics,
            # the training noise stream (validation runs on its own), so that a resumed fit continues it
            "rng_state": self._training_rng if self._training_rng is not None else noise_state(self.device),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.manifest_hash = checkpoint.get("lit_vae", {}).get("manifest_hash", "")
        self.data_split = checkpoint.get("lit_vae", {}).get("data_split", {})
        self.physics = checkpoint.get("lit_vae", {}).get("physics", {})
        self._resumed_rng = checkpoint.get("lit_vae", {}).get("rng_state")

    def on_train_start(self) -> None:
        """A resumed fit continues the checkpoint's training noise stream (set after Lightning's restore)."""
        if self._resumed_rng is not None:
            set_noise_state(self._resumed_rng, self.device)
            self._resumed_rng = None

    def on_validation_epoch_start(self) -> None:
        """Validation draws its own fixed noise (the same every epoch) and leaves the training stream as it
        was: validation losses are comparable between epochs and a resumed run trains exactly as an
        uninterrupted one."""
        self.check_finite()  # validation precedes the epoch's checkpoint
        self._training_rng = noise_state(self.device)
        torch.manual_seed(VALIDATION_SEED)  # seeds the CPU and every GPU

    # --- the model's parts ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self._setup_data(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and hasattr(self.decoder, "initialise_output_bias"):
            self.decoder.initialise_output_bias(datamodule.part("train")["target"])

    def encode(self, x: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, ...]:
        """(z, mu, log sigma); z is mu itself when deterministic."""
        mu, log_sigma = self.encoder(x)
        return (mu if deterministic else reparameterise(mu, log_sigma)), mu, log_sigma

    def terms(self, batch: dict, deterministic: bool = False) -> dict[str, torch.Tensor]:
        """The decoder's per-feature, recon and nll terms and the prior's KL, per event."""
        z, mu, log_sigma = self.encode(batch["x"], deterministic)
        return {**self.decoder.terms(z, batch, self.transform), "kl": self.prior.kl(mu, log_sigma, z)}

    def losses(self, batch: dict, deterministic: bool = False) -> dict[str, torch.Tensor]:
        """Per-event loss (the objective), elbo (beta = 1), recon and kl; deterministic decodes the
        posterior mean instead of a sample of it."""
        t = self.terms(batch, deterministic)
        return {"loss": t["recon"] + self.beta * t["kl"], "elbo": t["nll"] + t["kl"], "recon": t["recon"],
                "kl": t["kl"]}

    def sample_physical(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generated events in physical units (events, features): z from the prior, decoded by the head
        (sampled for likelihood and flow heads, the mean for the MSE head)."""
        z = self.prior.sample(n, generator)
        return self.decoder.sample(z, self.transform, generator)

    # --- shared behaviour -------------------------------------------------------------------------------
    def weighted_mean(self, values: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.use_weights and "weight" in batch:
            return (values * batch["weight"]).sum() / batch["weight"].sum()
        return values.mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        parts = self.losses(batch)
        loss = self.weighted_mean(parts["loss"], batch)
        if not self.finite(loss, lambda: {k: self.weighted_mean(parts[k], batch) for k in ("recon", "kl")}):
            return None  # Lightning skips the optimiser step
        self.log_train("train/loss", loss, len(batch["x"]), prog_bar=True)
        return loss

    def finite(self, loss: torch.Tensor, parts=None, label: str = "total") -> bool:
        """Whether a training loss (label: which one, for VAE+D's three) is finite. If not: with nan_policy
        'stop' raise a NumericalError naming epoch, step and the non-finite parts (parts(), when given, names
        them; else the label); with 'skip' count the batch in train/skipped_batches and return False. On an
        accelerator under 'stop' the check stays on the device (a host sync per step would idle it) and
        check_finite makes it at the steps that log (log_every_n_steps), before every validation and in every
        checkpoint."""
        deferred = self.defer_finite_checks if self.defer_finite_checks is not None else loss.device.type != "cpu"
        if deferred and self.nan_policy == "stop":
            self._unchecked.append((self.global_step, label, torch.isfinite(loss).all()))
            if self.global_step % self.trainer.log_every_n_steps == 0:  # the step log_train syncs at anyway
                self.check_finite()
            return True
        if torch.isfinite(loss).all():
            return True
        if self.nan_policy == "skip":
            self.log("train/skipped_batches", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
            return False
        bad = [name for name, value in (parts() if parts else {}).items() if not torch.isfinite(value).all()]
        bad = bad or [label]
        raise NumericalError(f"non-finite training loss ({', '.join(bad)}) at epoch {self.current_epoch}, step "
                             f"{self.global_step}; {NON_FINITE_ADVICE}")

    def check_finite(self) -> None:
        """Raise for the first non-finite training loss that finite() left on the device (one host sync)."""
        if not self._unchecked:
            return
        steps, labels, flags = zip(*self._unchecked, strict=True)
        self._unchecked = []
        finite = torch.stack(flags)
        if not finite.all():
            first = int((~finite).nonzero()[0])
            raise NumericalError(f"non-finite training loss ({labels[first]}) at epoch {self.current_epoch}, step "
                                 f"{steps[first]} (checked on the device at the steps that log); {NON_FINITE_ADVICE}")

    def log_train(self, name: str, value: torch.Tensor, n: int, prog_bar: bool = False) -> None:
        """Log a training value every log_every_n_steps steps (to the progress bar too when prog_bar) and
        its epoch mean (as name_epoch).

        The epoch mean is accumulated in a MeanMetric without its NaN check (which syncs every step; a
        NaN still shows as a NaN mean): Lightning's own on_epoch reduction and a per-step `self.log` cost
        more than these small models' forward and backward passes."""
        if name not in self.train_means:
            self.train_means[name] = MeanMetric(nan_strategy="disable").to(self.device)
        self.train_means[name].update(value.detach(), n)
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:
            self.log(f"{name}_step", value, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=n)

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        for name, metric in self.train_means.items():
            self.log(f"{name}_epoch", metric.compute())  # compute() syncs across DDP ranks
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        parts = self.losses(batch)
        weight = batch["weight"] if self.use_weights else torch.ones_like(parts["loss"])
        for name in VAL_METRICS:
            self.val_means[name].update(parts[name].detach(), weight)
        if self.is_generator and sum(len(v) for v in self._val_x) < self.w1_events:
            self._val_x.append(batch["x"].detach().cpu())

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """test/loss_background and test/loss_signal: the weighted mean score of each class of the test set
        (background validation part + signals); an anomaly detector should give signals the larger one."""
        score = self.score(batch)["score"]
        weight = batch["weight"] if self.use_weights else torch.ones_like(score)
        for label, name in enumerate(("background", "signal")):
            mine = batch["label"] == label
            if mine.any():
                self.test_means[name].update(score[mine], weight[mine])
        for name, metric in self.test_means.items():
            if metric.update_called:
                self.log(f"test/loss_{name}", metric, on_epoch=True, batch_size=len(score))

    def on_validation_epoch_end(self) -> None:
        set_noise_state(self._training_rng, self.device)
        self._training_rng = None
        for name in VAL_METRICS:  # logged once per epoch: a per-step self.log costs ~1 ms on these models
            self.log(f"val/{name}", self.val_means[name], prog_bar=name == "loss")
        if not self.is_generator or not self._val_x:
            return
        reference = torch.cat(self._val_x)[: self.w1_events].numpy()
        self._val_x = []
        generator = torch.Generator(device=self.device).manual_seed(12345)
        generated = self.transform(self.sample_physical(len(reference), generator)).cpu().numpy()  # on the device
        w1 = np.mean([wasserstein_distance(generated[:, j], reference[:, j]) for j in range(self.n_features)])
        self.log("val/w1_mean", float(w1), sync_dist=True)

    def make_optimizer(self, parameters) -> torch.optim.Optimizer:
        """The `optimizer` init arg over parameters at `learning_rate`; an lr given to the optimizer itself
        that contradicts learning_rate is refused (it would be silently replaced)."""
        optimizer = self.optimizer_factory(parameters)
        default = inspect.signature(type(optimizer).__init__).parameters.get("lr")
        given = optimizer.defaults.get("lr")
        if default is not None and given not in (default.default, self.learning_rate):
            raise ConfigError(f"model.init_args.optimizer.init_args.lr = {given} contradicts "
                              f"model.init_args.learning_rate = {self.learning_rate}: set learning_rate only")
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate
        return optimizer

    def configure_optimizers(self):
        """One optimiser from the `optimizer` init arg; its learning rate is always `learning_rate`, so a
        sweep over the learning rate is the single key model.init_args.learning_rate."""
        optimizer = self.make_optimizer(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "monitor": "val/loss"}}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n events in physical units (counts integer, angles in [-pi, pi))."""
        return self.sample_physical(n, generator)

    @torch.no_grad()
    def score(self, batch: dict) -> dict[str, torch.Tensor]:
        """score (the model's `anomaly_score`) and every score of the suite beside it."""
        suite = self.score_suite(batch)
        column = SCORE_COLUMNS[self.anomaly_score]
        return {"score": suite[column], **suite}

    def score_suite(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-event anomaly scores, each larger for more anomalous events, deterministic: total (the loss at
        the posterior mean) and its parts (recon, kl); the latent radius |mu| and its length in the prior's
        standard space (latent_mahalanobis); -log p(mu) under the prior (prior_nll); and, for density
        decoders, -log p(x) from iwae_samples importance samples (iwae, unit feature weights; the noise is
        batch["iwae_noise"] (K, events, latent) when given, as in the exported graph)."""
        parts = self.losses(batch, deterministic=True)
        _, mu, log_sigma = self.encode(batch["x"], deterministic=True)
        out = {"total": parts["loss"], **{k: v for k, v in parts.items() if k not in ("loss", "elbo")},
               "latent_radius": mu.norm(dim=-1), "latent_mahalanobis": self.prior.standardise(mu).norm(dim=-1),
               "prior_nll": -self.prior.log_prob(mu)}
        if self.iwae_samples and self.decoder.is_density:
            out["iwae"] = self.iwae_nll(batch, mu, log_sigma, self.iwae_samples, batch.get("iwae_noise"))
        return out

    def iwae_nll(self, batch: dict, mu: torch.Tensor, log_sigma: torch.Tensor, k: int,
                 eps: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x) ~ -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al.'s importance-
        weighted estimate; an upper bound on -log p(x) that tightens with K)."""
        log_w = self.log_importance_weights(batch, mu, log_sigma, k, eps)
        return -(torch.logsumexp(log_w, dim=0) - torch.log(torch.ones_like(log_w).sum(dim=0)))  # / K, any K

    def log_importance_weights(self, batch: dict, mu: torch.Tensor, log_sigma: torch.Tensor, k: int,
                               eps: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k posterior draws per event, shape (k, events); their
        mean is an ELBO estimate. The standard-normal noise eps (k, events, latent) defaults to a CPU
        generator seeded with IWAE_SEED: the same events give the same numbers on every device."""
        if eps is None:
            eps = torch.randn(k, *mu.shape, generator=torch.Generator().manual_seed(IWAE_SEED), dtype=mu.dtype)
        eps = eps.to(mu.device)
        k, n = eps.shape[0], mu.shape[0]
        z = (mu + torch.exp(log_sigma) * eps).reshape(k * n, -1)
        tiled = {key: v.repeat(k, *[1] * (v.dim() - 1)) for key, v in batch.items() if key in ("x", "target")}
        log_px = -self.decoder.terms(z, tiled, self.transform)["nll"].reshape(k, n)
        log_q = (-0.5 * (eps**2 + LOG_2PI) - log_sigma).sum(dim=-1)
        log_p = self.prior.log_prob(z).reshape(k, n)
        return log_px + log_p - log_q

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        ids = {k: batch[k] for k in ("event_id", "configuration", "sample", "label", "weight_pb")}
        return {**self.score(batch), **ids}


def noise_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random streams training draws from: the CPU's and, on a GPU (CUDA or MPS), the device's
    (reparameterisation, flow dequantisation and prior samples draw there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_noise_state(state: dict[str, torch.Tensor] | torch.Tensor, device: torch.device) -> None:
    """Restore noise_state's streams (a bare tensor is an older checkpoint's CPU stream)."""
    state = state if isinstance(state, dict) else {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    elif "mps" in state and device.type == "mps":
        torch.mps.set_rng_state(state["mps"])


def read_checkpoint(checkpoint_path: str, map_location: str = "cpu") -> dict:
    """A lit-vae checkpoint's contents, unpickled as tensors and plain data only (torch.load(weights_only=True)):
    a file crafted to run code, a truncated file or another program's checkpoint is refused in one line."""
    if not Path(checkpoint_path).is_file():
        raise ConfigError(f"{checkpoint_path}: no such checkpoint; give a .ckpt written by `lit-vae fit`")
    try:
        checkpoint = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0][:160]
        raise ConfigError(f"{checkpoint_path}: refused, it holds more than tensors and plain data ({reason}); "
                          "load only checkpoints written by `lit-vae fit`") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ConfigError(f"{checkpoint_path}: not a readable checkpoint ({str(err).splitlines()[0][:160]}); "
                          "it may be truncated: use another checkpoint of the run (last.ckpt, best-*.ckpt)") from None
    model_class(checkpoint, checkpoint_path)
    return checkpoint


def model_class(checkpoint: dict, checkpoint_path: str) -> type[BaseVAE]:
    """The lit-vae model class a checkpoint records (only classes of lit_vae.models)."""
    from lit_vae import models

    class_path = checkpoint.get("lit_vae", {}).get("class_path", "") if isinstance(checkpoint, dict) else ""
    cls = getattr(models, class_path.rpartition(".")[2], None) if class_path.startswith("lit_vae.models.") else None
    if not (isinstance(cls, type) and issubclass(cls, BaseVAE)):
        raise ConfigError(f"{checkpoint_path} is not a lit-vae checkpoint (model class {class_path or 'missing'}); "
                          "give a .ckpt written by `lit-vae fit`")
    return cls


def load_model(checkpoint_path: str, map_location: str = "cpu") -> BaseVAE:
    """Load a lit-vae checkpoint as its concrete class, in a fresh process, with nothing else."""
    cls = model_class(read_checkpoint(checkpoint_path, map_location), checkpoint_path)
    return cls.load_from_checkpoint(checkpoint_path, map_location=map_location, weights_only=True)

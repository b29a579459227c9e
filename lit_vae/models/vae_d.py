"""VAE + discriminator (the Zgamma paper's VAE+D): encoder, decoder and discriminator, each with its own
optimiser and loss, stepped by hand (Lightning manual optimisation).

Per batch, in this order:
1. discriminator: L_disc = BCE(D(X), 1) + BCE(D(X'), 0) + BCE(D(G), 0), on X and on the detached
   reconstruction X' and decoding G of z ~ N(0, 1);
2. decoder: L_dec = gamma * L_R - L_disc (the decoder tries to fool the updated discriminator);
   `adversarial_loss: paper` (default). This is the saturating form: once the discriminator is confident
   its gradient vanishes. `non_saturating` uses gamma * L_R + BCE(D(X'), 1) + BCE(D(G), 1) instead;
3. encoder: L_enc = beta * L_KL + gamma * L_R (the prior's parameters, if it has any, train with the encoder).
X' and G are the decoded means (the paper's decoder: mse) or, with a sampling decoder (likelihood, flow),
sampled events that carry a gradient (`decoded`); L_R is the decoder's reconstruction term either way.
Each loss reaches only its own network's parameters (`toggle_optimizer`). gamma plays beta's role on the
reconstruction term (Table 1's "Variational Beta" row for VAE+D); beta on the KL stays, default 1.
Only the encoder step counts as a Lightning step, so `global_step`, `max_steps` and step-based
checkpointing count batches, as for the other models.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.nn import functional as F

from lit_vae.errors import ConfigError
from lit_vae.models.components import Discriminator, reparameterise
from lit_vae.models.vae import VAE


class VAED(VAE):
    """VAE + discriminator with three optimisers; see the module docstring for the step order."""

    def __init__(self, n_features: int, gamma: float = 1.0, gradient_clip_val: float | None = None,
                 discriminator_activation: str = "leaky_relu",
                 adversarial_loss: Literal["paper", "non_saturating"] = "paper", **kwargs):
        super().__init__(n_features=n_features, **kwargs)
        if adversarial_loss not in ("paper", "non_saturating"):
            raise ConfigError(f"adversarial_loss must be 'paper' or 'non_saturating', got '{adversarial_loss}'")
        self.adversarial_loss = adversarial_loss
        self.automatic_optimization = False
        self.gamma, self.gradient_clip_val = gamma, gradient_clip_val
        self.discriminator = Discriminator(n_features, self.sizes, discriminator_activation)

    def losses(self, batch: dict, deterministic: bool = False) -> dict[str, torch.Tensor]:
        parts = super().losses(batch, deterministic)
        parts["loss"] = self.gamma * parts["recon"] + self.beta * parts["kl"]
        return parts

    def bce(self, logits: torch.Tensor, target: float, batch: dict) -> torch.Tensor:
        per_event = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none")
        return self.weighted_mean(per_event, batch)

    def discriminator_loss(self, x, reconstruction, generated, batch) -> torch.Tensor:
        d = self.discriminator
        return self.bce(d(x), 1.0, batch) + self.bce(d(reconstruction), 0.0, batch) + self.bce(d(generated), 0.0, batch)

    def adversarial_term(self, x, reconstruction, generated, batch) -> torch.Tensor:
        """What the decoder adds to gamma * L_R: -L_disc (paper) or BCE(D(X'), 1) + BCE(D(G), 1)."""
        if self.adversarial_loss == "paper":
            return -self.discriminator_loss(x, reconstruction, generated, batch)
        d = self.discriminator
        return self.bce(d(reconstruction), 1.0, batch) + self.bce(d(generated), 1.0, batch)

    def on_fit_start(self) -> None:
        if "mixed" in str(self.trainer.precision):
            raise ConfigError(f"VAED steps two of its optimisers outside Lightning's precision plugin; "
                              f"precision '{self.trainer.precision}' is not supported: use 32-true or bf16-true")
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters"):
            raise ConfigError("VAED's three backward passes each reach one network, which plain DDP refuses: "
                              "use --trainer.strategy=ddp_find_unused_parameters_true")

    def decoded(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded events in the transformed space, as the discriminator sees them: the paper's decoded mean
        (decoder: mse), or sampled events with a gradient (likelihood heads: reparameterised or
        straight-through, see Head.rsample; a flow decoder: reparameterised)."""
        return self.decoder.decoded(z, self.transform)

    def _step(self, optimizer, loss_fn, counted: bool, name: str) -> torch.Tensor | None:
        """Compute loss_fn() with only optimizer's parameters trainable, backpropagate, clip, step (None,
        nothing stepped, for a non-finite loss under nan_policy 'skip')."""
        self.toggle_optimizer(optimizer)
        loss = loss_fn()
        if not self.finite(loss, label=name):
            self.untoggle_optimizer(optimizer)
            return None
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        if counted:
            optimizer.step()  # through Lightning: counts one global step per batch
        else:
            optimizer.optimizer.step()
        self.untoggle_optimizer(optimizer)
        return loss.detach()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_encoder, opt_decoder, opt_discriminator = self.optimizers()
        x = batch["x"]
        with torch.no_grad():
            z = reparameterise(*self.encoder(x))
            z_prior = self.prior.sample(len(x))

        def discriminator_step():
            with torch.no_grad():
                reconstruction, generated = self.decoded(z), self.decoded(z_prior)
            return self.discriminator_loss(x, reconstruction, generated, batch)

        def decoder_step():
            reconstruction, generated = self.decoded(z), self.decoded(z_prior)
            recon = self.weighted_mean(self.decoder.terms(z, batch, self.transform)["recon"], batch)
            return self.gamma * recon + self.adversarial_term(x, reconstruction, generated, batch)

        def encoder_step():
            parts = self.terms(batch)
            return self.beta * self.weighted_mean(parts["kl"], batch) + self.gamma * self.weighted_mean(
                parts["recon"], batch)

        l_disc = self._step(opt_discriminator, discriminator_step, counted=False, name="discriminator")
        l_dec = None if l_disc is None else self._step(opt_decoder, decoder_step, counted=False, name="decoder")
        l_enc = None if l_dec is None else self._step(opt_encoder, encoder_step, counted=True, name="encoder")
        if l_enc is None:
            return
        self.log_train("train/loss", l_enc, len(x), prog_bar=True)
        self.log_train("train/disc", l_disc, len(x))
        self.log_train("train/dec", l_dec, len(x))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if "val/loss" in self.trainer.callback_metrics:
                    scheduler.step(self.trainer.callback_metrics["val/loss"])
            else:
                scheduler.step()

    def configure_optimizers(self):
        groups = ([*self.encoder.parameters(), *self.prior.parameters()], self.decoder.parameters(),
                  self.discriminator.parameters())
        optimizers = [self.make_optimizer(parameters) for parameters in groups]
        if self.scheduler_factory is None:
            return optimizers
        return optimizers, [self.scheduler_factory(o) for o in optimizers]

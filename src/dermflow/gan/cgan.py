"""The attention-conditioned C'GAN's two networks (the source paper's Fig. 3).

Generator: the class label through a learned embedding (broadcast over the
image), the latent vector through a fully connected layer reshaped to a noise
map at image resolution; image, attention map, noise map and class channels go
through a strided-conv encoder (BatchNorm, ReLU), residual blocks and a
transposed-conv decoder to a 3-channel residual. The synthetic image is the real
image plus the attention-weighted residual, clipped to [-1, 1], so pixels the
baseline ignored (attention 0) are left exactly as they were.

Critic: a conditional PatchGAN on (image, attention map) whose per-patch score
adds a class projection (the patch features dotted with a class embedding), so
it judges realism for the given class; the patch map is averaged. The paper puts
BatchNorm in the discriminator, but the WGAN-GP gradient penalty is defined per
sample and BatchNorm couples the samples of a batch (Gulrajani et al. 2017, §4),
so the critic uses layer normalisation (GroupNorm with one group) instead.

Training step (WGAN-GP): the generator runs once on the batch twice over (two noise
draws per source image). The first half feeds the critic update; then the generator
loss is adversarial + identity (L1 to the source) + diversity (the two draws of the
same source and class pushed apart, mode-seeking style). The paper leaves the pairing
open ("successive samples of the same class"); pairing draws of the same source is
what makes the noise matter, where pairing different sources would only fight the
identity term. One critic update per generator update, with the paper's two learning
rates (TTUR) instead of the original WGAN-GP's five critic steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dermflow.errors import ConfigError
from dermflow.gan.step import AdversarialStep, GanConfig
from dermflow.labels import CLASSES
from dermflow.training.precision import autocast

MAX_WIDTH = 512
PANELS = {"losses": ("loss_d", "loss_g"),  # loss curves: panel title → history columns
          "generator terms": ("adversarial", "identity", "diversity"),
          "critic": ("wasserstein", "gradient_penalty")}


def _widths(channels: int, depth: int) -> list[int]:
    return [min(channels * 2**i, MAX_WIDTH) for i in range(depth)]


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip: depth at the bottleneck without losing the signal."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class Generator(nn.Module):
    """G(image, attention, z, class) = clip(image + attention * residual)."""

    def __init__(self, image_size: int, n_classes: int, *, latent_dim: int = 64,
                 embed_dim: int = 16, channels: int = 64, depth: int = 4,
                 res_blocks: int = 3) -> None:
        super().__init__()
        if image_size % 2**depth:
            raise ConfigError(f"gan.depth: {depth} halvings need image_size divisible by "
                              f"{2**depth}, got {image_size}")
        self.image_size, self.latent_dim = image_size, latent_dim
        self.embed = nn.Embedding(n_classes, embed_dim)
        self.noise = nn.Linear(latent_dim, image_size * image_size)
        widths = _widths(channels, depth)
        encoder: list[nn.Module] = []
        width = 3 + 1 + 1 + embed_dim  # image, attention, noise map, class channels
        for out in widths:
            encoder += [nn.Conv2d(width, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out),
                        nn.ReLU(inplace=True)]
            width = out
        self.encoder = nn.Sequential(*encoder)
        self.bottleneck = nn.Sequential(*(ResidualBlock(width) for _ in range(res_blocks)))
        decoder: list[nn.Module] = []
        for out in reversed(widths[:-1]):
            decoder += [nn.ConvTranspose2d(width, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out),
                        nn.ReLU(inplace=True)]
            width = out
        decoder += [nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Tanh()]
        self.decoder = nn.Sequential(*decoder)

    def forward(self, image: torch.Tensor, attention: torch.Tensor, z: torch.Tensor,
                label: torch.Tensor) -> torch.Tensor:
        """image N x 3 x S x S in [-1, 1], attention N x 1 x S x S in [0, 1], z N x latent."""
        n, _, h, w = image.shape
        noise = self.noise(z).view(n, 1, h, w)
        classes = self.embed(label)[:, :, None, None].expand(-1, -1, h, w)
        x = torch.cat([image, attention, noise.to(image.dtype), classes.to(image.dtype)], 1)
        residual = self.decoder(self.bottleneck(self.encoder(x)))
        return (image + attention * residual.float()).clamp(-1, 1)


class Critic(nn.Module):
    """Conditional PatchGAN: one Wasserstein score per (image, attention, class)."""

    def __init__(self, n_classes: int, *, channels: int = 64, depth: int = 3) -> None:
        super().__init__()
        widths = _widths(channels, depth)
        layers: list[nn.Module] = [nn.Conv2d(4, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for before, out in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(before, out, 4, 2, 1), nn.GroupNorm(1, out),
                       nn.LeakyReLU(0.2, True)]
        width = min(widths[-1] * 2, MAX_WIDTH)  # one stride-1 layer widens the patch view
        layers += [nn.Conv2d(widths[-1], width, 3, 1, 1), nn.GroupNorm(1, width),
                   nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.realism = nn.Conv2d(width, 1, 3, 1, 1)
        self.embed = nn.Embedding(n_classes, width)

    def forward(self, image: torch.Tensor, attention: torch.Tensor,
                label: torch.Tensor) -> torch.Tensor:
        return self.score(image, attention, label)[0]

    def score(self, image: torch.Tensor, attention: torch.Tensor, label: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Wasserstein score and the last hidden layer, pooled, per image."""
        h = self.features(torch.cat([image, attention.to(image.dtype)], 1))
        patches = self.realism(h).squeeze(1) + (h * self.embed(label)[:, :, None, None]).sum(1)
        return patches.float().mean(dim=(1, 2)), h.mean(dim=(2, 3)).float()


class CganStep(AdversarialStep):
    """The C'GAN's WGAN-GP step (module docstring)."""

    losses = ("loss_d", "loss_g", "adversarial", "identity", "diversity", "gradient_penalty",
              "wasserstein")

    def __call__(self, x: torch.Tensor, attention: torch.Tensor, label: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, n, device = self.cfg, len(x), x.device
        z = torch.randn(2 * n, self.g.latent_dim, generator=generator, device=device)
        x2, a2, y2 = torch.cat([x, x]), torch.cat([attention, attention]), torch.cat([label, label])
        with autocast(device, cfg.precision):
            fake = self.g(x2, a2, z, y2)
        # critic: real vs the first draw, plus the gradient penalty on interpolates
        self.d.requires_grad_(True)
        detached = fake[:n].detach()
        eps = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        mix = (eps * x + (1 - eps) * detached).requires_grad_(True)
        with autocast(device, cfg.precision):
            d_real, d_fake = self.d(x, attention, label), self.d(detached, attention, label)
            d_mix = self.d(mix, attention, label)
        grad, = torch.autograd.grad(d_mix.sum(), mix, create_graph=True)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        wasserstein = d_real.mean() - d_fake.mean()
        loss_d = -wasserstein + cfg.gp_weight * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # generator: fool the critic, stay near the source, keep the two draws apart
        self.d.requires_grad_(False)
        with autocast(device, cfg.precision):
            adversarial = -self.d(fake, a2, y2).mean()
        identity = (fake - x2).abs().mean()
        diversity = -(fake[:n] - fake[n:]).abs().mean()
        loss_g = adversarial + cfg.identity_weight * identity + cfg.diversity_weight * diversity
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "adversarial": adversarial.detach(), "identity": identity.detach(),
                "diversity": diversity.detach(), "gradient_penalty": penalty.detach(),
                "wasserstein": wasserstein.detach()}


def networks(settings: dict[str, Any], image_size: int) -> tuple[Generator, Critic]:
    """Generator and critic as the ``gan`` config section describes them."""
    generator = Generator(image_size, len(CLASSES), latent_dim=settings["latent_dim"],
                          embed_dim=settings["embed_dim"], channels=settings["channels"],
                          depth=settings["depth"], res_blocks=settings["res_blocks"])
    critic = Critic(len(CLASSES), channels=settings["critic_channels"],
                    depth=settings["critic_depth"])
    return generator, critic


def train_config(settings: dict[str, Any], common: dict[str, Any]) -> GanConfig:
    """The run's GanConfig from the ``gan`` section (``common``: epochs, seed, precision...)."""
    return GanConfig(batch_size=settings["batch_size"], lr_g=settings["lr_g"],
                     lr_d=settings["lr_d"], betas=tuple(settings["betas"]),
                     gp_weight=settings["gp_weight"], identity_weight=settings["identity_weight"],
                     diversity_weight=settings["diversity_weight"], **common)


Step = CganStep

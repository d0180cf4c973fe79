"""C'GAN training throughput: dermflow's loop vs a bare loop of the same networks.

Both run in the same process on the same device with the same generator and
critic (config.yaml's `gan` section), batch size and precision. A step is one
critic update (with gradient penalty) and one generator update, the generator
run on two noise draws per image in both loops. The bare loop trains on one
random batch already on the device; dermflow's loop (fit_gan) gathers images and
attention maps from the resident cache and records its losses. Prints a Markdown
row for benchmarks/RESULTS.md.

    python benchmarks/bench_gan.py --batch 32 --size 224 --steps 40 --precision fp32
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import replace

import numpy as np
import torch
import yaml
from bench_baseline import timed

from dermflow.config import validate_config
from dermflow.gan.cgan import CganStep
from dermflow.gan.networks import build_networks
from dermflow.gan.step import TO_UNIT
from dermflow.gan.training import fit_gan, gan_config
from dermflow.provenance import cpu_name
from dermflow.training.batches import ImageTensor
from dermflow.training.precision import autocast


def bare_loop(settings: dict, device: torch.device, batch: int, size: int, steps: int,
              precision: str) -> float:
    """images/s of the WGAN-GP step written out plainly on a fixed batch."""
    torch.manual_seed(0)
    g, d = (m.to(device).train() for m in build_networks(settings, size))
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=4e-4, betas=(0.0, 0.9))
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    a = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, 7, (batch,), device=device)
    x2, a2, y2 = torch.cat([x, x]), torch.cat([a, a]), torch.cat([y, y])

    def step() -> None:
        z = torch.randn(2 * batch, g.latent_dim, device=device)
        with autocast(device, precision):
            fake = g(x2, a2, z, y2)
        d.requires_grad_(True)
        eps = torch.rand(batch, 1, 1, 1, device=device)
        mix = (eps * x + (1 - eps) * fake[:batch].detach()).requires_grad_(True)
        with autocast(device, precision):
            loss_d = d(fake[:batch].detach(), a, y).mean() - d(x, a, y).mean()
            d_mix = d(mix, a, y)
        grad, = torch.autograd.grad(d_mix.sum(), mix, create_graph=True)
        loss_d = loss_d + 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(False)
        with autocast(device, precision):
            adversarial = -d(fake, a2, y2).mean()
        loss_g = (adversarial + 10 * (fake - x2).abs().mean()
                  - 0.1 * (fake[:batch] - fake[batch:]).abs().mean())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return timed(step, batch, steps, device)


def dermflow_loop(settings: dict, device: torch.device, batch: int, size: int, steps: int,
                  precision: str) -> float:
    """images/s of fit_gan's second epoch (the first is warm-up)."""
    n = batch * steps
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                       rng.integers(0, 7, n), device, *TO_UNIT)
    attention = torch.from_numpy(rng.random((n, size, size), dtype=np.float32)).half()
    attention = attention.to(device) if data.resident and device.type == "cuda" else attention
    torch.manual_seed(0)
    cfg = replace(gan_config(settings, precision=precision, seed=0, extra={}), epochs=2,
                  batch_size=batch)
    history = fit_gan(CganStep(*build_networks(settings, size), cfg), data, attention,
                      np.arange(n), cfg)
    return float(history["images_per_s"].iloc[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--config", default="config.yaml", help="takes its gan section")
    args = parser.parse_args()
    with open(args.config) as fh:
        settings = validate_config(yaml.safe_load(fh))["gan"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_name()
    g, d = build_networks(settings, args.size)
    params = f"{sum(p.numel() for p in g.parameters()) / 1e6:.1f}M / " \
             f"{sum(p.numel() for p in d.parameters()) / 1e6:.1f}M"
    bare = bare_loop(settings, device, args.batch, args.size, args.steps, args.precision)
    ours = dermflow_loop(settings, device, args.batch, args.size, args.steps, args.precision)
    print("| date | device | torch | G / D params | batch | size | precision "
          "| bare img/s | dermflow img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dt.date.today()} | {name} | {torch.__version__} | {params} | {args.batch} "
          f"| {args.size} | {args.precision} | {bare:.1f} | {ours:.1f} | {ours / bare:.2f} |")


if __name__ == "__main__":
    main()

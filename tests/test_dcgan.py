"""Paper 003's class-conditional DCGAN: shapes, conditioning and its BCE step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage_configs import gan_config

from dermflow.gan.dcgan import DcganDiscriminator, DcganGenerator, DcganStep, resize
from dermflow.gan.step import TO_UNIT
from dermflow.gan.training import fit_gan
from dermflow.labels import CLASSES
from dermflow.training.batches import ImageTensor


def test_generator_makes_64px_images_from_a_512_latent():
    torch.manual_seed(0)
    generator = DcganGenerator(len(CLASSES)).eval()  # the paper's sizes
    first = generator.net[0]
    assert first.in_channels == 512 + len(CLASSES) and first.out_channels == 512
    out = generator(torch.randn(2, 512), torch.tensor([0, 3]))
    assert out.shape == (2, 3, 64, 64) and out.min() >= -1 and out.max() <= 1


def test_class_reaches_generator_and_discriminator():
    torch.manual_seed(0)
    generator = DcganGenerator(len(CLASSES), latent_dim=8, channels=4, size=16).eval()
    discriminator = DcganDiscriminator(len(CLASSES), channels=4, size=16).eval()
    z = torch.randn(1, 8).expand(2, -1)
    images = generator(z, torch.tensor([0, 5]))
    assert not torch.allclose(images[0], images[1])
    same = images[:1].expand(2, -1, -1, -1)
    logits = discriminator(same, torch.tensor([0, 5]))
    assert logits.shape == (2,) and logits[0] != logits[1]
    realism, features = discriminator.score(same, torch.tensor([0, 0]))
    assert realism.shape == (2,) and features.shape == (2, 8)


def test_discriminator_takes_other_sizes_resized():
    discriminator = DcganDiscriminator(len(CLASSES), channels=4, size=16)
    assert discriminator(torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])).shape == (3,)
    assert resize(torch.rand(1, 3, 8, 8), 16).shape == (1, 3, 16, 16)


def test_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        DcganGenerator(7, size=48)


def test_training_updates_both_networks_and_logs_bce_terms():
    torch.manual_seed(0)
    generator = DcganGenerator(len(CLASSES), latent_dim=8, channels=4, size=16)
    discriminator = DcganDiscriminator(len(CLASSES), channels=4, size=16)
    before = [p.detach().clone() for p in (*generator.parameters(), *discriminator.parameters())]
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (28, 32, 32, 3), dtype=np.uint8),
                       np.arange(28) % 7, torch.device("cpu"), *TO_UNIT)
    cfg = gan_config(epochs=2, batch_size=8, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999),
                    precision="fp32")
    history = fit_gan(DcganStep(generator, discriminator, cfg), data, None, np.arange(28), cfg)
    assert list(history.columns[1:5]) == ["loss_d", "loss_g", "d_real", "d_fake"]
    assert ((history["d_real"] > 0) & (history["d_real"] < 1)).all()
    after = [*generator.parameters(), *discriminator.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))

"""The C'GAN's networks and its WGAN-GP loop (CPU, tiny sizes)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from stage_configs import gan_config

from dermflow.errors import ConfigError
from dermflow.gan.cgan import CganStep, Critic, Generator
from dermflow.gan.step import TO_UNIT
from dermflow.gan.training import GanTrainer, fit_gan
from dermflow.labels import CLASSES
from dermflow.training.batches import ImageTensor
from dermflow.training.sampling import epoch_order

SIZE = 16


def networks(seed: int = 0) -> tuple[Generator, Critic]:
    torch.manual_seed(seed)
    return (Generator(SIZE, len(CLASSES), latent_dim=8, embed_dim=4, channels=8, depth=2,
                      res_blocks=1),
            Critic(len(CLASSES), channels=8, depth=2))


def test_generator_changes_only_where_attention_is():
    generator, _ = networks()
    generator.train()  # batch statistics: the residual is far from zero at initialisation
    x = torch.rand(4, 3, SIZE, SIZE) * 2 - 1
    attention = torch.zeros(4, 1, SIZE, SIZE)
    attention[..., SIZE // 2:] = 1.0  # right half attended, left half ignored
    out = generator(x, attention, torch.randn(4, 8), torch.tensor([0, 2, 4, 6]))
    change = (out - x).abs()
    assert change[..., : SIZE // 2].max() == 0
    assert change[..., SIZE // 2:].mean() > 0.05
    assert out.min() >= -1 and out.max() <= 1


def test_noise_and_class_both_reach_the_output():
    generator, _ = networks()
    generator.eval()
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    attention = torch.ones(2, 1, SIZE, SIZE)
    z = torch.randn(2, 8)
    label = torch.tensor([1, 1])
    base = generator(x, attention, z, label)
    assert not torch.allclose(base, generator(x, attention, torch.randn(2, 8), label))
    assert not torch.allclose(base, generator(x, attention, z, torch.tensor([3, 3])))


def test_critic_scores_each_sample_and_knows_the_class():
    _, critic = networks()
    x = torch.rand(3, 3, SIZE, SIZE)
    attention = torch.rand(3, 1, SIZE, SIZE)
    scores = critic(x, attention, torch.tensor([0, 1, 2]))
    assert scores.shape == (3,)
    assert not torch.allclose(scores, critic(x, attention, torch.tensor([5, 5, 5])))
    # layer norm, not BatchNorm: a sample's score does not depend on its batch-mates
    alone = critic(x[:1], attention[:1], torch.tensor([0]))
    assert torch.allclose(alone, scores[:1], atol=1e-5)
    # what synthesis.select ranks by: the same score, and pooled features to spread over
    realism, features = critic.score(x, attention, torch.tensor([0, 1, 2]))
    assert torch.equal(realism, scores) and features.shape == (3, 32)  # the widened layer


def test_image_size_must_suit_the_depth():
    with pytest.raises(ConfigError, match="gan.depth"):
        Generator(20, 7, depth=3)


def test_oversampling_balances_classes():
    """An epoch visits pool rows only: balanced by class with oversampling, else each once."""
    labels = np.array([0] * 90 + [1] * 10 + [2] * 6)  # rows 100-105: outside the pool
    data = ImageTensor(np.zeros((106, 4, 4, 3), np.uint8), labels, torch.device("cpu"),
                       *TO_UNIT)
    pool = np.arange(100)
    step = SimpleNamespace(g=None, d=None)
    trainer = GanTrainer(step, data, None, pool, gan_config(oversample=True), None)
    order = epoch_order(trainer.positions, trainer.weights, torch.Generator().manual_seed(0))
    assert len(order) == 100 and order.max() < 100
    assert 35 < (labels[order] == 1).sum() < 65
    plain = GanTrainer(step, data, None, pool, gan_config(oversample=False), None)
    assert plain.weights is None
    order = epoch_order(plain.positions, plain.weights, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(100))


def tiny_data() -> tuple[ImageTensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.arange(24) % len(CLASSES)
    data = ImageTensor(images, labels, torch.device("cpu"), *TO_UNIT)
    attention = torch.from_numpy(rng.random((24, SIZE, SIZE)).astype(np.float16))
    return data, attention, np.arange(20)  # rows 20-23 are outside the pool


def test_one_step_updates_both_networks_and_reports_losses():
    generator, critic = networks()
    step = CganStep(generator, critic, gan_config(batch_size=4))
    g0 = [p.detach().clone() for p in generator.parameters()]
    d0 = [p.detach().clone() for p in critic.parameters()]
    data, attention, _ = tiny_data()
    rows = torch.arange(4)
    x, y = data.batch(rows)
    losses = step(x, attention[rows].float().unsqueeze(1), y, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["gradient_penalty"] >= 0 and losses["identity"] >= 0
    assert losses["diversity"] <= 0  # minus the distance between the two draws
    assert any(not torch.equal(a, b) for a, b in zip(g0, generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, critic.parameters(), strict=True))


class Killed(Exception):
    """Stands in for the job being killed mid-epoch."""


class DiesAfter(CganStep):
    """A CganStep that is killed after a given number of steps."""

    def __init__(self, *args, steps: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps = steps

    def __call__(self, *args):
        self.steps -= 1
        if self.steps < 0:
            raise Killed
        return super().__call__(*args)


def test_killed_run_resumes_to_the_same_generator(tmp_path):
    data, attention, pool = tiny_data()
    cfg = gan_config(epochs=3, batch_size=4, seed=5)
    straight = CganStep(*networks(), cfg)
    history = fit_gan(straight, data, attention, pool, cfg)
    assert list(history["epoch"]) == [1, 2, 3] and history["images_per_s"].gt(0).all()

    checkpoint = tmp_path / "last.pt"
    with pytest.raises(Killed):  # 5 steps per epoch: killed in the middle of epoch 2
        fit_gan(DiesAfter(*networks(), cfg, steps=7), data, attention, pool, cfg, checkpoint)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    resumed = CganStep(*networks(seed=9), cfg)  # other initial weights: all state must come back
    assert list(fit_gan(resumed, data, attention, pool, cfg, checkpoint)["epoch"]) == [1, 2, 3]
    for a, b in zip(straight.g.state_dict().values(), resumed.g.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)

    other = gan_config(epochs=1, batch_size=4, seed=6)  # another run ignores this checkpoint
    assert list(fit_gan(CganStep(*networks(), other), data, attention, pool, other,
                        checkpoint)["epoch"]) == [1]

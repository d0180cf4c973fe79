"""The training recipe options: LR curves, balanced sampling, EMA, label smoothing and
test-time augmentation, each against values computed by hand (or by PyTorch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stage_configs import train_config

from dermflow.experiments.classifier import training_budget
from dermflow.training.batches import ImageTensor
from dermflow.training.ema import EMA, warm_decay
from dermflow.training.loop import cross_entropy, fit, predict, steps_per_epoch
from dermflow.training.sampling import class_weights, epoch_order, image_weights
from dermflow.training.schedules import lr_factor, resolve
from dermflow.training.tta import VIEWS

CPU = torch.device("cpu")


@pytest.mark.parametrize(("step", "expected"), [
    (0, 1 / 3), (1, 2 / 3),  # linear warm-up over 2 steps
    (2, 1.0),  # the peak, where the cosine starts
    (6, 0.5),  # half-way through the 8 cosine steps
    (9, 0.5 * (1 + math.cos(7 * math.pi / 8))),  # the last step, near 0
])
def test_cosine_curve_by_hand(step, expected):
    assert lr_factor("cosine", step, 10, 2) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("step", "expected"), [
    (0, 1 / 25),  # one-cycle starts at peak / 25
    (1, 1 - 0.48),  # cosine half-way from 0.04 to 1
    (2, 1.0),  # peak at the end of the 2-step warm-up
    (9, 1 / 25 / 1e4),  # last step: start / 1e4
])
def test_onecycle_curve_by_hand(step, expected):
    assert lr_factor("onecycle", step, 10, 2) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("total", "warmup"), [(10, 2), (57, 9), (3, 1)])
def test_onecycle_is_torchs_one_cycle(total, warmup):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    torch_curve = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1.0, total_steps=total, pct_start=(warmup + 1) / total,
        cycle_momentum=False)
    for step in range(total):
        assert lr_factor("onecycle", step, total, warmup) == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-9), step
        optimizer.step()
        torch_curve.step()


def test_onecycle_without_warmup_starts_at_the_peak():
    assert lr_factor("onecycle", 0, 5, 0) == 1.0
    assert lr_factor("onecycle", 2, 5, 0) == pytest.approx((1 + 4e-6) / 2)
    assert lr_factor("onecycle", 4, 5, 0) == pytest.approx(4e-6)


def test_constant_and_plateau_are_flat_and_old_configs_keep_their_plateau():
    assert {lr_factor(s, 5, 10, 2) for s in ("constant", "plateau")} == {1.0}
    assert resolve("constant", 5) == "plateau" and resolve("constant", 0) == "constant"
    assert resolve("onecycle", 0) == "onecycle"


def test_balanced_sampling_draws_classes_as_one_over_f_to_the_power():
    labels = np.repeat([0, 1, 2], [400, 100, 25])
    train = torch.arange(len(labels))
    for power, expected in ((0.5, [4 / 7, 2 / 7, 1 / 7]), (1.0, [1 / 3] * 3),
                            (0.0, [400 / 525, 100 / 525, 25 / 525])):
        weights = image_weights(labels, power)
        drawn = np.concatenate([epoch_order(train, weights, torch.Generator().manual_seed(e))
                                .numpy() for e in range(40)])
        assert len(drawn) == 40 * len(labels)
        share = np.bincount(labels[drawn], minlength=3) / len(drawn)
        np.testing.assert_allclose(share, expected, atol=0.015, err_msg=f"power {power}")
    np.testing.assert_allclose(class_weights(labels, 1.0), [525 / 400, 525 / 100, 525 / 25])
    order = epoch_order(train, None, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == train.tolist()  # uniform: every image once


def test_ema_update_by_hand():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    torch.nn.init.ones_(model[0].weight)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update()  # update 1: decay min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.model[0].weight, torch.full((1, 2), d * 1 + (1 - d) * 3))
    torch.testing.assert_close(ema.model[1].running_mean, torch.full((1,), (1 - d) * 2.0))
    assert int(ema.model[1].num_batches_tracked) == 7  # integer buffers are copied
    before = ema.model[0].weight.clone()
    ema.updates = 99
    ema.update()  # update 100: min(0.9, 101/110) = 0.9
    torch.testing.assert_close(ema.model[0].weight, 0.9 * before + 0.1 * 3.0)
    assert not ema.model[0].weight.requires_grad


@pytest.mark.parametrize(("updates", "expected"), [
    (1, 2 / 11), (20, 0.7), (80, 0.9),  # a short run averages its last few steps
    (8990, 0.999), (100_000, 0.999),  # the configured decay, once the warm-up is over
])
def test_ema_decay_warms_up_by_hand(updates, expected):
    assert warm_decay(0.999, updates) == pytest.approx(expected, abs=1e-12)


def offset_data(n: int = 140, size: int = 8) -> ImageTensor:
    """Three classes by dominant colour, far from zero mean once normalised (mean -5): a
    network's BatchNorm statistics then move fast while it learns."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = rng.integers(0, 100, (n, size, size, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, ..., label] += np.uint8(100)
    return ImageTensor(images, labels, CPU, (-5.0,) * 3, (1.0,) * 3)


def bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for channels in (3, 8, 8):
        layers += [torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                   torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 3))
    net.num_classes = 3
    return net


def test_a_twenty_step_runs_moving_average_learns_as_its_raw_weights_do():
    data, model = offset_data(), bn_net()
    train, val = np.arange(80), np.arange(80, 140)
    cfg = train_config(epochs=4, batch_size=16, lr=1e-2, augment=False, ema=0.999)
    assert cfg.epochs * steps_per_epoch(len(train), cfg.batch_size) == 20
    result = fit(model, data, train, val, cfg)
    kept = bn_net()
    kept.load_state_dict(result.state)
    truth = data.labels[val].numpy()
    accuracy = (predict(kept, data, val, 64).argmax(1) == truth).mean()
    x, _ = data.batch(torch.as_tensor(val))
    with torch.no_grad():  # the raw weights, normalised by the batch's own statistics
        raw = (model.train()(x).argmax(1).numpy() == truth).mean()
    assert raw > 0.9  # the problem is learnt in 20 steps (chance: 1/3)
    assert accuracy >= raw - 0.05
    assert result.history["val_accuracy"].iloc[-1] == pytest.approx(accuracy)


def test_recomputed_statistics_are_the_inputs_and_frozen_layers_keep_theirs():
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        model[1].running_mean.fill_(7.0)
    ema = EMA(model, decay=0.999)
    model.train()
    model[1].eval()  # frozen: training does not move its statistics
    inputs = [torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[4.0, 5.0], [6.0, 7.0]])]
    ema.recompute_norms(model, inputs)
    # the mean over the batches of each batch's mean (1, 5 | 2, 6) and unbiased variance (2)
    torch.testing.assert_close(ema.model[0].running_mean, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(ema.model[0].running_var, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(ema.model[1].running_mean, torch.full((2,), 7.0))
    assert not ema.model.training and ema.model[0].momentum == 0.1


def test_label_smoothing_loss_against_pytorch_and_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 7), torch.tensor([0, 1, 2, 3, 4, 6])
    log_p = torch.log_softmax(logits, 1)
    by_hand = (0.9 * -log_p[torch.arange(6), labels] + 0.1 * -log_p.mean(1)).mean()
    torch.testing.assert_close(cross_entropy(logits, labels, None, 0.1), by_hand)
    torch.testing.assert_close(cross_entropy(logits, labels, None, 0.1),
                               torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels))
    assert cross_entropy(logits, labels, None, 0.0) == F.cross_entropy(logits, labels)


def colour_data(n: int = 140, size: int = 16) -> ImageTensor:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 7
    images = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, ..., label % 3] += np.uint8(80 + 40 * (label // 3))
    return ImageTensor(images, labels, CPU, (0.5,) * 3, (0.5,) * 3)


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 7))
    net.num_classes = 7
    return net


def test_the_loop_trains_on_the_smoothed_loss():
    data, model = colour_data(), small_net()
    train, val = np.arange(98), np.arange(98, 140)
    cfg = train_config(epochs=1, batch_size=14, lr=0.0, augment=False, label_smoothing=0.2)
    result = fit(model, data, train, val, cfg)  # lr 0: the weights never move
    x, y = data.batch(torch.as_tensor(train))
    with torch.no_grad():
        log_p = torch.log_softmax(model.eval()(x), 1)
    expected = (0.8 * -log_p[torch.arange(98), y] + 0.2 * -log_p.mean(1)).mean()
    assert result.history["train_loss"].iloc[0] == pytest.approx(float(expected), rel=1e-5)


def test_the_loop_steps_the_curve_per_batch():
    data, model = colour_data(), small_net()
    cfg = train_config(epochs=3, batch_size=16, lr=1e-2, lr_schedule="cosine",
                      lr_warmup_epochs=1, seed=1)
    result = fit(model, data, np.arange(98), np.arange(98, 140), cfg)
    steps = steps_per_epoch(98, 16)
    assert steps == 6  # the short last batch is dropped
    expected = [1e-2 * lr_factor("cosine", (e + 1) * steps - 1, 3 * steps, steps)
                for e in range(3)]
    np.testing.assert_allclose(result.history["lr"], expected, rtol=1e-12)


def test_the_loop_draws_balanced_epochs():
    data, model = colour_data(n=280), small_net()
    labels = data.labels.numpy()
    train = np.concatenate([np.flatnonzero(labels == c)[:40 if c == 0 else 8] for c in range(7)])
    seen = []
    batch = data.batch

    def spy(index, generator=None, policy="dermoscopy"):
        if generator is not None:  # training batches only
            seen.append(labels[index.numpy()])
        return batch(index, generator, policy)

    data.batch = spy
    cfg = train_config(epochs=6, batch_size=8, lr=1e-3, sampling="balanced", sampling_power=1.0)
    fit(model, data, train, np.setdiff1d(np.arange(len(labels)), train)[:20], cfg)
    share = np.bincount(np.concatenate(seen), minlength=7) / sum(map(len, seen))
    assert list(np.bincount(labels[train])) == [40] + [8] * 6
    np.testing.assert_allclose(share, 1 / 7, atol=0.03)  # power 1: classes equally often


def test_the_loop_validates_and_keeps_the_moving_average(tmp_path):
    data, model = colour_data(), small_net()
    cfg = train_config(epochs=1, batch_size=16, lr=1e-2, ema=0.9)
    result = fit(model, data, np.arange(98), np.arange(98, 140), cfg,
                 checkpoint=tmp_path / "last.pt")
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    for key, value in saved["ema"]["model"].items():
        torch.testing.assert_close(result.state[key], value, rtol=0, atol=0)
    assert saved["ema"]["updates"] == steps_per_epoch(98, 16)
    assert not torch.equal(result.state["4.weight"], saved["model"]["4.weight"])


def tta_data(images: np.ndarray) -> ImageTensor:
    return ImageTensor(np.ascontiguousarray(images), np.zeros(len(images), np.int64), CPU,
                       (0.5,) * 3, (0.5,) * 3)


def test_tta_is_the_mean_of_its_views_and_invariant_under_them():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    model, index = small_net(seed=2).eval(), np.arange(10)

    def probs(imgs: np.ndarray, tta: str) -> np.ndarray:
        return predict(model, tta_data(imgs), index, 4, tta=tta)

    mirrored = images[:, :, ::-1]
    rotations = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    group = rotations + [np.rot90(mirrored, k, axes=(1, 2)) for k in range(4)]
    assert not np.allclose(probs(images, "none"), probs(mirrored, "none"), atol=1e-4)
    np.testing.assert_allclose(probs(images, "flip"),
                               (probs(images, "none") + probs(mirrored, "none")) / 2, atol=1e-6)
    np.testing.assert_allclose(probs(images, "dihedral"),
                               np.mean([probs(g, "none") for g in group], 0), atol=1e-6)
    np.testing.assert_allclose(probs(mirrored, "flip"), probs(images, "flip"), atol=1e-6)
    for view in group:
        np.testing.assert_allclose(probs(view, "dihedral"), probs(images, "dihedral"),
                                   atol=1e-6)
    assert not np.allclose(probs(rotations[1], "flip"), probs(images, "flip"), atol=1e-4)
    assert len(VIEWS["dihedral"]) == 8 and np.allclose(probs(images, "flip").sum(1), 1)


def test_an_epoch_budget_draws_the_same_number_of_images_from_any_table():
    small, large = torch.arange(10), torch.arange(100, 137)
    for train in (small, large):
        order = epoch_order(train, None, torch.Generator().manual_seed(4), 24)
        counts = np.bincount(order.numpy() - int(train[0]), minlength=len(train))
        assert len(order) == 24 and set(order.tolist()) <= set(train.tolist())
        assert counts.max() - counts.min() <= 1  # shuffled passes: each image as often, +-1
        weights = image_weights(np.arange(len(train)) % 3, 0.5)
        assert len(epoch_order(train, weights, torch.Generator().manual_seed(4), 24)) == 24
    again = epoch_order(small, None, torch.Generator().manual_seed(4), 24)
    assert torch.equal(again, epoch_order(small, None, torch.Generator().manual_seed(4), 24))
    unset = epoch_order(large, None, torch.Generator().manual_seed(4))  # today's epoch, as was
    assert torch.equal(unset, large[torch.randperm(37, generator=torch.Generator().manual_seed(4))])
    assert torch.equal(epoch_order(large, None, torch.Generator().manual_seed(4), 37), unset)


@pytest.mark.parametrize("sampling", ["uniform", "balanced"])
def test_with_an_epoch_budget_datasets_of_any_size_train_the_same_steps(sampling):
    """A dataset 2.5x the real pool gets the same optimizer steps, and metrics.json says so."""
    data = colour_data(n=280)
    steps, budgets = [], []
    for train in (np.arange(40), np.arange(100)):
        optimizers = []

        def adam(model, optimizers=optimizers):
            optimizers.append(torch.optim.Adam(model.parameters(), lr=1e-3))
            return optimizers[-1]

        cfg = train_config(epochs=2, batch_size=16, augment=False, sampling=sampling,
                          epoch_images=70)
        result = fit(small_net(), data, train, np.arange(200, 280), cfg, optimizer_factory=adam)
        state = next(iter(optimizers[0].state.values()))
        steps.append(int(state["step"]))
        assert result.history["optimizer_steps"].tolist() == [4, 4]  # each epoch's own record
        assert result.history["images_seen"].tolist() == [64, 64]
        budgets.append(training_budget(result.history, len(train),
                                       {"epoch_images": 70, "batch_size": 16}))
    assert steps == [8, 8]  # 2 epochs x 4 full batches of the 70 drawn images
    assert [b["optimizer_steps"] for b in budgets] == steps
    assert budgets[0] == budgets[1] == {"epoch_images": 70, "epochs_trained": 2,
                                        "optimizer_steps": 8, "images_seen": 128}
    cfg = train_config(epochs=2, batch_size=16, augment=False, sampling=sampling)
    whole = fit(small_net(), data, np.arange(100), np.arange(200, 280), cfg).history
    assert training_budget(whole, 100, {"epoch_images": None}) == {  # null: the whole split
        "epoch_images": 100, "epochs_trained": 2, "optimizer_steps": 2 * 6, "images_seen": 192}

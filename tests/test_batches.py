"""GPU-side batching and augmentation (run here on the CPU: the same code)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from dermflow.gan.networks import gather_attention
from dermflow.training.augmentation import AUGMENTATIONS, augment, keras_augment
from dermflow.training.batches import ImageTensor, batches

CPU = torch.device("cpu")


def test_batch_is_normalised_channels_last_and_aligned():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    data = ImageTensor(images, np.arange(6), CPU, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    x, y = data.batch(torch.tensor([4, 1]))
    assert y.tolist() == [4, 1]
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (images[4].transpose(2, 0, 1) / 255 - np.array([0.5, 0.4, 0.3])[:, None, None]) \
        / np.array([0.2, 0.25, 0.5])[:, None, None]
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-5)


def test_augment_is_seeded_per_image_and_label_preserving():
    x = torch.rand(8, 3, 16, 16)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a[0], a[1])


def test_identity_settings_leave_images_alone():
    x = torch.rand(4, 3, 16, 16)
    y = augment(x, torch.Generator().manual_seed(0), rotate=0, scale=(1, 1), shift=0, jitter=0)
    # only flips remain: each output is the input or a flip of it
    for a, b in zip(x, y, strict=True):
        assert any(torch.allclose(f, b, atol=1e-5) for f in
                   (a, a.flip(-1), a.flip(-2), a.flip(-1).flip(-2)))


def test_keras_augmentation_flips_horizontally_only_and_fills_with_the_nearest_edge():
    x = torch.rand(16, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    y = keras_augment(x, gen, rotate=0, shift=0, shear=0, zoom=0)
    flipped = [torch.allclose(b, a.flip(-1), atol=1e-5) for a, b in zip(x, y, strict=True)]
    kept = [torch.allclose(b, a, atol=1e-5) for a, b in zip(x, y, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    # shifted by up to 20%: nearest fill repeats edge pixels instead of padding with zeros
    constant = torch.full((4, 3, 16, 16), 0.7)
    out = keras_augment(constant, torch.Generator().manual_seed(1))
    assert torch.allclose(out, constant, atol=1e-5)


def test_keras_augmentation_stays_within_twenty_degrees():
    """A horizontal bar rotated by at most 20° keeps most of its mass near the middle rows."""
    x = torch.zeros(64, 3, 33, 33)
    x[:, :, 16, :] = 1.0
    y = keras_augment(x, torch.Generator().manual_seed(3), shift=0, zoom=0)
    rows = y.mean(dim=(0, 1, 3))  # mass per row, over all images
    assert rows[16 - 7:16 + 8].sum() > 0.9 * rows.sum()  # tan(20°) x 16 ≈ 6 rows off centre
    assert keras_augment(x, torch.Generator().manual_seed(3)).shape == x.shape


def test_batches_drop_only_a_short_tail():
    chunks = batches(torch.arange(10), 4, drop_last=True)
    assert [len(c) for c in chunks] == [4, 4]
    assert [len(c) for c in batches(torch.arange(10), 4)] == [4, 4, 2]



class Copies:
    """Tensor.to and pin_memory, recorded: copies "to a GPU" stay on the CPU, so the step's
    code runs here as it would there, and each host-to-GPU copy says whether it waits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pinned: list[torch.Tensor] = []
        self.waiting: list[str] = []  # host-to-GPU copies that make the host wait
        to = torch.Tensor.to

        def fake_to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            target = kwargs.get("device", args[0] if args else None)
            if not isinstance(target, str | torch.device) or torch.device(target).type != "cuda":
                return to(tensor, *args, **kwargs)
            if not kwargs.get("non_blocking"):
                self.waiting.append(f"blocking copy of {tuple(tensor.shape)}")
            elif not any(tensor is p for p in self.pinned):
                self.waiting.append(f"copy of {tuple(tensor.shape)} from pageable memory")
            return tensor

        def fake_pin(tensor: torch.Tensor) -> torch.Tensor:
            self.pinned.append(tensor.clone())
            return self.pinned[-1]

        monkeypatch.setattr(torch.Tensor, "to", fake_to)
        monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)


def test_a_batch_bound_for_the_gpu_never_makes_the_host_wait(monkeypatch: pytest.MonkeyPatch):
    """The step's indices, drawn on the host, and the images of a cache kept on the host
    reach the GPU through pinned memory, asynchronously: a copy from pageable memory waits
    until the GPU has run all the work queued before it. (On the CPU, a stand-in: the
    copies are recorded, not made; tests/test_gpu.py runs the step on CUDA.)"""
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    data = ImageTensor(images, np.arange(6), CPU, (0.5,) * 3, (0.25,) * 3)
    data.device = torch.device("cuda", 0)  # a cache that did not fit on this "GPU"
    copies = Copies(monkeypatch)
    x, y = data.batch(torch.tensor([4, 1]), torch.Generator().manual_seed(0))
    assert copies.waiting == []
    assert len(copies.pinned) == 2  # the indices, then the gathered images
    assert y.tolist() == [4, 1] and x.shape == (2, 3, 8, 8)


def test_attention_bound_for_the_gpu_never_makes_the_host_wait(monkeypatch: pytest.MonkeyPatch):
    """The GAN's attention maps, kept on the host when they do not fit (attention_tensor),
    reach the GPU as the images do: gathered for the step's rows, drawn on the host, then
    copied through pinned memory without waiting."""
    maps = torch.rand(6, 8, 8).half()
    copies = Copies(monkeypatch)
    a = gather_attention(maps, torch.tensor([4, 1]), torch.device("cuda", 0))
    assert copies.waiting == []
    assert len(copies.pinned) == 1  # the gathered maps; the rows were on the maps' device
    assert a is not None and a.dtype == torch.float32 and a.shape == (2, 1, 8, 8)
    assert torch.equal(a, maps[[4, 1]].float().unsqueeze(1))


@pytest.mark.parametrize("policy", sorted(AUGMENTATIONS))
def test_augmentation_builds_no_tensor_from_host_data(monkeypatch: pytest.MonkeyPatch,
                                                      policy: str):
    """torch.tensor(list, device=cuda) is a blocking host-to-GPU copy, once per step."""
    def host_tensor(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("a tensor made from host data in the step")

    monkeypatch.setattr(torch, "tensor", host_tensor)
    monkeypatch.setattr(torch, "as_tensor", host_tensor)
    x = AUGMENTATIONS[policy](torch.rand(4, 3, 16, 16), torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 16, 16)


def test_an_array_in_memory_is_not_copied_again_and_batches_the_same(tmp_path):
    """load_dataset's cache + synthetic concatenation (3 GB at the paper's size) becomes the
    tensor itself; a memory-mapped cache is read once into a copy; both give the same batches."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "cache.npy", images)
    mapped = np.load(tmp_path / "cache.npy", mmap_mode="r")
    owned = np.concatenate([mapped[:6], mapped[6:]])
    from_owned = ImageTensor(owned, np.arange(10), CPU, (0.5,) * 3, (0.25,) * 3)
    from_mapped = ImageTensor(mapped, np.arange(10), CPU, (0.5,) * 3, (0.25,) * 3)
    assert np.shares_memory(from_owned.images.numpy(), owned)
    assert not np.shares_memory(from_mapped.images.numpy(), mapped)
    rows = torch.tensor([7, 0, 3])
    assert torch.equal(from_owned.batch(rows)[0], from_mapped.batch(rows)[0])
    assert torch.equal(from_owned.images, torch.from_numpy(images))

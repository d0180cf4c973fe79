"""Batches straight from the uint8 image cache, augmented on the training device.

The cache is copied to the GPU once when it fits, so a training step is an
index gather plus batched tensor ops: no DataLoader workers, no JPEG decoding,
no CPU bottleneck. On the CPU the same code runs on the memory-mapped array.

A step never makes the host wait for the GPU: a copy from ordinary (pageable) host
memory to the GPU returns only once the GPU has run everything queued before it, so
the batch's indices (drawn on the host) and, when the cache stays on the host, its
images go through pinned memory and are copied asynchronously (``to_device``).
"""

from __future__ import annotations

import numpy as np
import torch

from dermflow.training.augmentation import AUGMENTATIONS

GPU_SHARE = 0.5  # the cache may take at most this share of free GPU memory


def evaluation_batch(batch_size: int) -> int:
    """Images per forward pass without gradients (validation, test, prediction): twice the
    training batch, as no activations are kept for a backward pass."""
    return 2 * batch_size


def fits_on_gpu(nbytes: int, free_bytes: int) -> bool:
    """Whether an image array of ``nbytes`` is copied to a GPU with ``free_bytes`` free: it
    may take at most GPU_SHARE of it, leaving the rest to the model and its activations."""
    return nbytes < GPU_SHARE * free_bytes


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; from the host to a GPU staged in pinned memory and copied
    without waiting (torch keeps the pinned block until the copy has run)."""
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def in_memory(images: np.ndarray) -> np.ndarray:
    """``images`` in ordinary memory: a memmap (or any view) is read once into a copy; an
    array that already owns its data (load_dataset's cache + synthetic concatenation, 3 GB
    at the paper's size) is used as it is, so its images are not held twice."""
    owned = images.flags.owndata and images.flags.writeable and images.flags.c_contiguous
    return images if owned else np.array(images)


class ImageTensor:
    """N x H x W x 3 uint8 images (on the device when they fit) and their labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.device = device
        on_gpu = device.type == "cuda" and fits_on_gpu(images.nbytes,
                                                       torch.cuda.mem_get_info(device)[0])
        tensor = torch.from_numpy(in_memory(images))
        self.images = tensor.to(device) if on_gpu else (
            tensor.pin_memory() if device.type == "cuda" else tensor)
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.long, device=device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.resident = on_gpu or device.type == "cpu"

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None,
              policy: str = "dermoscopy") -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float NCHW (channels_last) images and labels; augmented by ``policy``
        (a key of AUGMENTATIONS) if a generator is given."""
        on_device = to_device(index, self.device)
        gather = on_device if self.images.device == self.device else to_device(
            index, self.images.device)
        x = to_device(self.images[gather], self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        if generator is not None:
            x = AUGMENTATIONS[policy](x, generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last), self.labels[on_device]


def batches(index: torch.Tensor, batch_size: int, *, drop_last: bool = False,
            ) -> list[torch.Tensor]:
    """Consecutive chunks of an index tensor."""
    chunks = list(index.split(batch_size))
    if drop_last and len(chunks) > 1 and len(chunks[-1]) < batch_size:
        chunks.pop()
    return chunks

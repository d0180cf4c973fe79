"""Every generator ``gan.kind`` can name, and what the workflow must know of it while it
plans. The one table to extend: a new kind is a family module (its ``networks``, ``Step``,
``PANELS`` and ``train_config``) and one entry here; the balance mode of the same name, the
config schema and the rules follow this table. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any

from dermflow.errors import ConfigError


def _cgan_check(config: dict[str, Any]) -> Iterator[str]:
    size, depth = config.get("image_size"), config.get("gan", {}).get("depth")
    if isinstance(size, int) and isinstance(depth, int) and size % 2**depth:
        yield (f"gan.depth: the generator halves the image {depth} times, so image_size must be "
               f"divisible by {2**depth} (it is {size})")


def _dcgan_check(config: dict[str, Any]) -> Iterator[str]:
    size = config.get("gan", {}).get("dcgan", {}).get("size")
    if isinstance(size, int) and size & (size - 1):
        yield f"gan.dcgan.size: must be a power of two (it is {size})"


@dataclass(frozen=True)
class GeneratorKind:
    """A generator family: ``module`` defines ``networks(settings, image_size)``, ``Step``,
    ``PANELS`` and ``train_config(settings, common)``. ``needs_attention``: it edits a real
    source image under that image's SmoothGrad map (so synthesis records sources), rather
    than drawing from the class alone. ``check`` yields config errors of its own keys."""

    module: str
    paper: str
    needs_attention: bool
    check: Callable[[dict[str, Any]], Iterator[str]]


GENERATORS: dict[str, GeneratorKind] = {
    "cgan": GeneratorKind("dermflow.gan.cgan", "000: attention-conditioned C'GAN, WGAN-GP",
                          needs_attention=True, check=_cgan_check),
    "dcgan": GeneratorKind("dermflow.gan.dcgan", "003: DermaGAN's class-conditional DCGAN",
                           needs_attention=False, check=_dcgan_check),
}


BALANCES = ("none", *GENERATORS, "augment", "oversample")  # balance modes (README: Experiments)


def generator_kind(kind: str) -> GeneratorKind:
    """The table entry of ``kind``; ConfigError names the known ones."""
    if kind not in GENERATORS:
        raise ConfigError(f"gan.kind: unknown generator {kind!r}; one of {', '.join(GENERATORS)}")
    return GENERATORS[kind]


def family(kind: str) -> ModuleType:
    """The module that builds and trains generator ``kind`` (imports torch)."""
    return import_module(generator_kind(kind).module)

"""Model creation: offline weights from a local folder, and a useful error without them."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import timm
import torch

from dermflow.models.backbones import WeightsError, create


def test_local_weights_are_loaded(tmp_path):
    source = timm.create_model("resnetv2_18", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "resnetv2_18.pth")
    model = create("resnetv2_18", num_classes=7, pretrained=True, weights_dir=tmp_path)
    torch.testing.assert_close(model.stem.conv.weight, source.stem.conv.weight)
    assert model.num_classes == 7


def test_missing_weights_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as err:
        create("resnetv2_18", num_classes=7, pretrained=True, weights_dir=tmp_path)
    message = str(err.value)
    assert "huggingface.co/timm/resnetv2_18" in message
    assert str(tmp_path / "resnetv2_18.safetensors") in message and "pretrained: false" in message


def test_pretrained_false_needs_nothing():
    assert create("resnetv2_18", num_classes=7).num_classes == 7

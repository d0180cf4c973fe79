"""The fusion classifiers: cross-attention, shapes, and the frozen/unfrozen training stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage_configs import train_config

from dermflow.models.fusion import CrossAttentionFusion, FusionClassifier
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import fit


def test_cross_attention_shapes_and_weights():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(cnn_dim=32, token_dim=24, dim=16, heads=4)
    tokens = torch.randn(3, 6, 24)  # B x tokens x token width (the ViT's queries)
    fmap = torch.randn(3, 32, 5, 5)  # B x C x H x W (the CNN's keys and values)
    weights = fusion.attention_weights(tokens, fmap)
    assert weights.shape == (3, 4, 6, 25)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 6), atol=1e-6)
    assert (weights >= 0).all()
    assert fusion(tokens, fmap).shape == (3, 16)


def test_fused_kernel_matches_the_explicit_attention():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(cnn_dim=8, token_dim=8, dim=8, heads=2).eval()
    tokens, fmap = torch.randn(2, 3, 8), torch.randn(2, 8, 2, 2)
    weights = fusion.attention_weights(tokens, fmap)
    q_flat, _, _, v = fusion._qkv(tokens, fmap)
    explicit = (weights @ v).transpose(1, 2).reshape(q_flat.shape)
    expected = fusion.norm(explicit + q_flat).mean(dim=1)
    assert torch.allclose(fusion(tokens, fmap), expected, atol=1e-5)


@pytest.mark.parametrize("architecture", ["resnet50v2_deit", "resnet50v2_mobilenetv2"])
def test_classifier_outputs_one_logit_per_class(architecture):
    model = FusionClassifier(architecture, 7, image_size=32, dim=32, heads=4, bottleneck=16)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_warmup_changes_fusion_and_head_only_then_finetuning_reaches_the_backbones():
    torch.manual_seed(0)
    model = FusionClassifier("resnet50v2_deit", 7, image_size=32, dim=32, heads=4,
                             bottleneck=16)
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
                       np.arange(24) % 7, torch.device("cpu"), (0.5,) * 3, (0.5,) * 3)
    backbone = {k: v.clone() for k, v in model.backbones.state_dict().items()}  # + BN stats
    head = model.head.weight.detach().clone()
    model.freeze_backbones()
    cfg = train_config(epochs=1, batch_size=8, lr=1e-3, augment=False)
    model.load_state_dict(fit(model, data, np.arange(16), np.arange(16, 24), cfg).state)
    assert all(torch.equal(backbone[k], v) for k, v in model.backbones.state_dict().items())
    assert not torch.equal(head, model.head.weight)

    model.unfreeze(1)
    cnn, vit = model.backbones
    assert all(p.requires_grad for p in cnn.stages[-1].parameters())
    assert not any(p.requires_grad for p in cnn.stages[0].parameters())
    assert all(p.requires_grad for p in vit.blocks[-1].parameters())
    assert not any(p.requires_grad for p in vit.blocks[0].parameters())
    model.load_state_dict(fit(model, data, np.arange(16), np.arange(16, 24), cfg).state)
    changed = {k for k, v in model.backbones.state_dict().items() if not torch.equal(
        backbone[k], v)}
    assert any(k.startswith("0.stages.3") for k in changed)
    assert not any(k.startswith(("0.stages.0", "1.blocks.0.")) for k in changed)

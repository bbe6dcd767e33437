"""VideoMAE V2 model: sizes, forward semantics, the normalised-pixel loss, analytic MACs."""

from __future__ import annotations

import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import group_parameters
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from services.trainer.flops import forward_macs
from services.trainer.masking import RunningCellMasking, TubeMasking
from services.trainer.videomae import (
    MODEL_NAMES,
    create_classifier,
    create_pretrain_model,
    layer_id,
    pretrain_loss,
    sinusoid_table,
)

TINY = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4, img_size=32)
TINY_DECODER = dict(decoder_embed_dim=16, decoder_num_heads=2, decoder_depth=1)


def _tiny_pretrain(**kw: object) -> torch.nn.Module:
    return create_pretrain_model("vit_small_patch16_224", **{**TINY, **TINY_DECODER, **kw}).eval()


def _masks(model: torch.nn.Module, batch: int, ratio: float = 0.5, decoder_ratio: float = 0.5):
    enc = TubeMasking(model.grid_size, ratio)
    dec = RunningCellMasking(model.grid_size, decoder_ratio)
    generator = torch.Generator().manual_seed(0)
    encoder_mask = torch.stack([enc(generator) for _ in range(batch)])
    decoder_mask = torch.stack([dec(generator, encoder_mask[i]) for i in range(batch)])
    return encoder_mask, decoder_mask


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


ENCODER_PARAMS_M = {
    "vit_small_patch16_224": 21.9,
    "vit_base_patch16_224": 86.2,
    "vit_large_patch16_224": 303.9,
    "vit_huge_patch16_224": 631.6,
    "vit_giant_patch14_224": 1011.6,
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match_the_spec(name: str) -> None:
    with torch.device("meta"):
        classifier = create_classifier(name, num_classes=0)
        pretrain = create_pretrain_model(name)
    assert round(_count(classifier) / 1e6, 1) == ENCODER_PARAMS_M[name]
    assert _count(pretrain.encoder) == _count(classifier)
    patch = pretrain.patch_size
    assert pretrain.decoder.head.out_features == 3 * 2 * patch * patch
    assert len(pretrain.decoder.blocks) == 4


def test_vit_b_with_400_classes_has_86_534_800_parameters() -> None:
    with torch.device("meta"):
        model = create_classifier("vit_base_patch16_224", num_classes=400)
    assert _count(model) == 86_534_800
    assert (model.num_patches, model.grid_size, model.embed_dim, model.depth) == (
        1568, (8, 14, 14), 768, 12,
    )  # fmt: skip


SPEC_GMACS = [
    ("vit_small_patch16_224", 0.0, None, 56.9),
    ("vit_base_patch16_224", 0.0, None, 180.3),
    ("vit_large_patch16_224", 0.0, None, 596.8),
    ("vit_huge_patch16_224", 0.0, None, 1191.0),
    ("vit_giant_patch14_224", 0.0, None, 2543.0),
    ("vit_base_patch16_224", 0.9, None, 35.4),
    ("vit_base_patch16_224", 0.9, 0.5, 25.8),
    ("vit_giant_patch14_224", 0.9, None, 262.0),
    ("vit_giant_patch14_224", 0.9, 0.5, 241.0),
]


@pytest.mark.parametrize(("name", "ratio", "decoder_ratio", "gmacs"), SPEC_GMACS)
def test_forward_macs_match_the_spec(name: str, ratio: float, decoder_ratio, gmacs: float) -> None:
    macs = forward_macs(name, 16, 224, encoder_mask_ratio=ratio, decoder_mask_ratio=decoder_ratio)
    # ViT-g pre-training: 264 against the spec's 262, because the reference decoder inherits
    # mlp_ratio 48/11; everything else is within 0.1%.
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_forward_macs_equal_torch_flop_counter_on_a_real_forward() -> None:
    model = _tiny_pretrain()
    video = torch.randn(2, 3, 4, 32, 32)
    encoder_mask, decoder_mask = _masks(model, 2)
    # The math backend runs attention as counted matmuls (the CPU fused kernel has no formula).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(video, encoder_mask, decoder_mask)
    expected = forward_macs(model, 4, 32, encoder_mask_ratio=0.5, decoder_mask_ratio=0.5)
    assert counter.get_total_flops() / 2 / 2 == expected  # FLOPs = 2 MACs, batch of 2

    classifier = create_classifier("vit_small_patch16_224", 5, **TINY).eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        classifier(video)
    assert counter.get_total_flops() / 2 / 2 == forward_macs(classifier, 4, 32)


def test_pretrain_forward_returns_kept_positions_in_token_order() -> None:
    torch.manual_seed(0)
    model = _tiny_pretrain()
    video = torch.randn(3, 3, 4, 32, 32)
    encoder_mask, decoder_mask = _masks(model, 3)
    out = model(video, encoder_mask, decoder_mask)
    assert out.shape == (3, int((~decoder_mask[0]).sum()), 3 * 2 * 16 * 16)
    # One sample at a time gives the same rows: nothing leaks across the batch.
    for i in range(3):
        single = model(video[i : i + 1], encoder_mask[i : i + 1], decoder_mask[i : i + 1])
        torch.testing.assert_close(single[0], out[i], atol=1e-5, rtol=1e-5)
    # None reconstructs every encoder-masked token, the same as dropping every visible one.
    torch.testing.assert_close(
        model(video, encoder_mask, None), model(video, encoder_mask, ~encoder_mask)
    )


def test_pretrain_forward_ignores_hidden_pixels() -> None:
    model = _tiny_pretrain()
    video = torch.randn(1, 3, 4, 32, 32)
    encoder_mask = torch.zeros(1, model.num_patches, dtype=torch.bool)
    encoder_mask[0, [1, 2, 5, 6]] = True  # t=0, h=0, w=1 ...: a tube over both slots
    changed = video.clone()
    changed[:, :, 0:2, 0:16, 16:32] += 5.0  # pixels of token 1 (t=0, h=0, w=1)
    torch.testing.assert_close(model(video, encoder_mask), model(changed, encoder_mask))


def test_masks_of_the_wrong_shape_are_refused() -> None:
    model = _tiny_pretrain()
    with pytest.raises(ValueError, match="mask of shape"):
        model(torch.randn(1, 3, 4, 32, 32), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.randn(1, 3, 8, 32, 32), torch.zeros(1, 8, dtype=torch.bool))


def _reference_target(video: torch.Tensor, t: int, p: int) -> torch.Tensor:
    """The per-tube, per-channel normalised target written out token by token."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1, 1)
    rows = []
    for clip in video:
        pixels = clip * std + mean  # 3, T, H, W
        tokens = []
        for ti in range(pixels.shape[1] // t):
            for hi in range(pixels.shape[2] // p):
                for wi in range(pixels.shape[3] // p):
                    tube = pixels[
                        :, ti * t : (ti + 1) * t, hi * p : (hi + 1) * p, wi * p : (wi + 1) * p
                    ]
                    tube = tube.reshape(3, -1)  # C, (t p p)
                    tube = (tube - tube.mean(1, keepdim=True)) / (tube.std(1, keepdim=True) + 1e-6)
                    tokens.append(tube.T.reshape(-1))  # (t p p c), channel fastest
        rows.append(torch.stack(tokens))
    return torch.stack(rows)


def test_loss_target_is_normalised_per_tube_and_channel() -> None:
    model = _tiny_pretrain()
    video = torch.randn(2, 3, 4, 32, 32)
    encoder_mask, decoder_mask = _masks(model, 2)
    keep = ~decoder_mask
    target = _reference_target(video, model.tubelet_size, model.patch_size)
    exact = target[keep].reshape(2, -1, target.shape[-1])
    assert pretrain_loss(model, video, exact, encoder_mask, decoder_mask) < 1e-10
    shifted = exact + 1.0
    assert pretrain_loss(model, video, shifted, encoder_mask, decoder_mask) == pytest.approx(1.0)

    # An affine change of one tube's channel (gain > 0, offset) leaves the target unchanged.
    pixels = video.clone()
    pixels[:, 1, 0:2, 0:16, 0:16] = pixels[:, 1, 0:2, 0:16, 0:16] * 3.0 + 0.7
    assert pretrain_loss(model, pixels, exact, encoder_mask, decoder_mask) < 1e-8


def test_loss_covers_only_tokens_masked_for_the_encoder_and_kept_by_the_decoder() -> None:
    torch.manual_seed(1)
    model = _tiny_pretrain()
    video = torch.randn(2, 3, 4, 32, 32)
    encoder_mask, decoder_mask = _masks(model, 2)
    prediction = model(video, encoder_mask, decoder_mask)
    base = pretrain_loss(model, video, prediction, encoder_mask, decoder_mask)
    keep = ~decoder_mask
    counted = encoder_mask[keep].reshape(2, -1)  # rows of the prediction the loss reads
    assert counted.any() and (~counted).any()

    perturbed = prediction.detach().clone()
    perturbed[~counted] += 100.0  # visible tokens the decoder also reconstructs
    assert pretrain_loss(model, video, perturbed, encoder_mask, decoder_mask) == pytest.approx(
        base.item()
    )
    perturbed = prediction.detach().clone()
    perturbed[counted] += 1.0
    assert pretrain_loss(model, video, perturbed, encoder_mask, decoder_mask) > base + 0.5

    base.backward()
    assert (
        model.mask_token.grad is not None
        and model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    )


def test_loss_reads_tubelet_and_patch_size_from_the_model() -> None:
    overrides = {**TINY, **TINY_DECODER, "img_size": 28, "tubelet_size": 4}
    model = create_pretrain_model("vit_giant_patch14_224", **overrides).eval()
    assert (model.patch_size, model.tubelet_size, model.grid_size) == (14, 4, (1, 2, 2))
    video = torch.randn(1, 3, 4, 28, 28)
    encoder_mask = torch.tensor([[True, False, True, False]])
    prediction = model(video, encoder_mask)
    assert prediction.shape == (1, 2, 3 * 4 * 14 * 14)
    target = _reference_target(video, 4, 14)[:, [0, 2]]
    assert pretrain_loss(model, video, target, encoder_mask, None) < 1e-10


def test_classifier_contract() -> None:
    torch.manual_seed(0)
    model = create_classifier("vit_small_patch16_224", 5, **TINY, head_drop_rate=0.5).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    tokens = model.forward_features(video)
    assert tokens.shape == (2, model.num_patches, 32)
    assert model.forward_head(tokens, pre_logits=True).shape == (2, 32)
    torch.testing.assert_close(model(video), model.forward_head(tokens))
    assert model.get_classifier() is model.head and model(video).shape == (2, 5)
    # Head init: trunc_normal(0.02) scaled by init_scale 0.001.
    assert 0 < model.head.weight.abs().max() < 0.02 * 0.001 * 5
    model.reset_classifier(7)
    assert model(video).shape == (2, 7) and model.head.weight.abs().max() < 0.02 * 0.001 * 5
    assert model.no_weight_decay() == set()


def test_layer_ids_for_layer_wise_decay() -> None:
    model = create_classifier("vit_small_patch16_224", 5, **TINY, use_learnable_pos_emb=True)
    ids = {name: layer_id(name, model.depth) for name, _ in model.named_parameters()}
    assert ids["patch_embed.proj.weight"] == ids["pos_embed"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.1.mlp.fc2.bias"] == 2
    assert ids["fc_norm.weight"] == ids["head.bias"] == 3
    assert layer_id("module._orig_mod.blocks.1.norm1.weight", model.depth) == 2
    # timm's layer decay, reading group_matcher, numbers the parameters the same way
    assert group_parameters(model, model.group_matcher(), reverse=True) == ids

    pretrain = _tiny_pretrain()
    ids = {name: layer_id(name, pretrain.depth) for name, _ in pretrain.named_parameters()}
    assert ids["encoder.patch_embed.proj.weight"] == 0
    assert ids["encoder.blocks.1.attn.proj.weight"] == 2
    assert ids["encoder.norm.weight"] == ids["decoder.blocks.0.mlp.fc1.weight"] == 3
    assert ids["mask_token"] == ids["encoder_to_decoder.weight"] == 3


def test_activation_checkpointing_gives_the_same_values_and_grads() -> None:
    torch.manual_seed(0)
    plain = _tiny_pretrain().train()
    checkpointed = _tiny_pretrain(use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    video = torch.randn(2, 3, 4, 32, 32)
    encoder_mask, decoder_mask = _masks(plain, 2)
    losses = []
    for model in (plain, checkpointed):
        loss = pretrain_loss(
            model, video, model(video, encoder_mask, decoder_mask), encoder_mask, decoder_mask
        )
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(
        plain.encoder.blocks[0].attn.qkv.weight.grad,
        checkpointed.encoder.blocks[0].attn.qkv.weight.grad,
    )


def test_init_follows_the_reference() -> None:
    torch.manual_seed(0)
    model = create_pretrain_model(
        "vit_base_patch16_224", **{**TINY, "embed_dim": 384, "num_heads": 6}
    )
    qkv = model.encoder.blocks[0].attn.qkv.weight  # xavier_uniform: bound sqrt(6 / (in + out))
    assert qkv.abs().max() <= (6 / (384 + 3 * 384)) ** 0.5
    assert qkv.abs().max() > 0.9 * (6 / (384 + 3 * 384)) ** 0.5
    # The reference wrapper never applies its init: PyTorch's default bound 1 / sqrt(in).
    e2d = model.encoder_to_decoder.weight
    assert 0.9 / 384**0.5 < e2d.abs().max() <= 1 / 384**0.5
    assert model.encoder.blocks[0].attn.q_bias.abs().sum() == 0
    assert model.encoder.blocks[0].attn.k_bias.abs().sum() == 0
    assert 0.015 < model.mask_token.std() < 0.025


def test_position_tables_are_non_persistent_sinusoid_buffers() -> None:
    model = _tiny_pretrain()
    assert "pos_embed" not in model.state_dict() and "encoder.pos_embed" not in model.state_dict()
    table = sinusoid_table(model.num_patches, 32)
    torch.testing.assert_close(model.encoder.pos_embed, table, rtol=0, atol=0)
    position, j = 5, 6  # sin on even j, cos on odd j, angle = pos / 10000^(2 (j // 2) / d)
    assert table[0, position, j].item() == pytest.approx(
        torch.tensor(5 / 10000 ** (6 / 32)).sin().item()
    )
    assert table[0, position, j + 1].item() == pytest.approx(
        torch.tensor(5 / 10000 ** (6 / 32)).cos().item()
    )

    with torch.device("meta"):
        meta = _tiny_pretrain()
    meta.to_empty(device="cpu")
    meta.init_non_persistent_buffers()
    torch.testing.assert_close(meta.pos_embed, model.pos_embed, rtol=0, atol=0)
    assert meta.encoder.blocks[1].attn.k_bias.abs().sum() == 0


def test_unknown_names_and_options_are_refused() -> None:
    with pytest.raises(ValueError, match="decoder_depth"):
        create_classifier("vit_small_patch16_224", 5, decoder_depth=2)
    with pytest.raises(ValueError, match="num_frame"):
        create_pretrain_model("vit_small_patch16_224", num_frame=8)
    with pytest.raises(ValueError, match="vit_tiny"):
        create_pretrain_model("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="tubelet_size"):
        create_classifier("vit_small_patch16_224", 5, **{**TINY, "num_frames": 5})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_vit_b_pretraining_step_runs_on_flash_attention() -> None:
    torch.manual_seed(0)
    model = create_pretrain_model("vit_base_patch16_224", use_checkpoint=True).cuda()
    video = torch.randn(2, 3, 16, 224, 224, device="cuda")
    encoder_mask, decoder_mask = (m.cuda() for m in _masks(model, 2, ratio=0.9))
    # Forcing the flash backend makes the step fail if our q/k/v layout or dtype rules it out.
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        prediction = model(video, encoder_mask, decoder_mask)
        loss = pretrain_loss(model, video, prediction, encoder_mask, decoder_mask)
    loss.backward()
    assert prediction.shape == (2, 784, 1536) and torch.isfinite(loss)
    assert model.encoder.blocks[0].attn.qkv.weight.grad.isfinite().all()
    with torch.no_grad():
        full = pretrain_loss(
            model, video, model(video, encoder_mask, decoder_mask), encoder_mask, decoder_mask
        )
    assert loss.item() == pytest.approx(full.item(), rel=0.02)

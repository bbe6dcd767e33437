"""Reference state-dict keys both ways, official checkpoint formats, our own checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from services.trainer.videomae import (
    IncompatibleCheckpoint,
    create_classifier,
    create_pretrain_model,
    load_checkpoint,
    sinusoid_table,
)

# Tiny config: encoder 32 wide, 2 blocks, decoder 16 wide, 1 block; 4x32x32 clips, p 16.
TINY = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4, img_size=32)
TINY_DECODER = dict(decoder_embed_dim=16, decoder_num_heads=2, decoder_depth=1)

# The reference's pre-training keys (OpenGVLab/VideoMAEv2 modeling_pretrain.py) for the tiny
# config, with shapes. No pos_embed: the sinusoid table is not part of the state dict.
REFERENCE_PRETRAIN = {
    "encoder.patch_embed.proj.weight": (32, 3, 2, 16, 16),
    "encoder.patch_embed.proj.bias": (32,),
    "encoder.blocks.0.norm1.weight": (32,),
    "encoder.blocks.0.norm1.bias": (32,),
    "encoder.blocks.0.attn.q_bias": (32,),
    "encoder.blocks.0.attn.v_bias": (32,),
    "encoder.blocks.0.attn.qkv.weight": (96, 32),
    "encoder.blocks.0.attn.proj.weight": (32, 32),
    "encoder.blocks.0.attn.proj.bias": (32,),
    "encoder.blocks.0.norm2.weight": (32,),
    "encoder.blocks.0.norm2.bias": (32,),
    "encoder.blocks.0.mlp.fc1.weight": (128, 32),
    "encoder.blocks.0.mlp.fc1.bias": (128,),
    "encoder.blocks.0.mlp.fc2.weight": (32, 128),
    "encoder.blocks.0.mlp.fc2.bias": (32,),
    "encoder.blocks.1.norm1.weight": (32,),
    "encoder.blocks.1.norm1.bias": (32,),
    "encoder.blocks.1.attn.q_bias": (32,),
    "encoder.blocks.1.attn.v_bias": (32,),
    "encoder.blocks.1.attn.qkv.weight": (96, 32),
    "encoder.blocks.1.attn.proj.weight": (32, 32),
    "encoder.blocks.1.attn.proj.bias": (32,),
    "encoder.blocks.1.norm2.weight": (32,),
    "encoder.blocks.1.norm2.bias": (32,),
    "encoder.blocks.1.mlp.fc1.weight": (128, 32),
    "encoder.blocks.1.mlp.fc1.bias": (128,),
    "encoder.blocks.1.mlp.fc2.weight": (32, 128),
    "encoder.blocks.1.mlp.fc2.bias": (32,),
    "encoder.norm.weight": (32,),
    "encoder.norm.bias": (32,),
    "encoder_to_decoder.weight": (16, 32),
    "mask_token": (1, 1, 16),
    "decoder.blocks.0.norm1.weight": (16,),
    "decoder.blocks.0.norm1.bias": (16,),
    "decoder.blocks.0.attn.q_bias": (16,),
    "decoder.blocks.0.attn.v_bias": (16,),
    "decoder.blocks.0.attn.qkv.weight": (48, 16),
    "decoder.blocks.0.attn.proj.weight": (16, 16),
    "decoder.blocks.0.attn.proj.bias": (16,),
    "decoder.blocks.0.norm2.weight": (16,),
    "decoder.blocks.0.norm2.bias": (16,),
    "decoder.blocks.0.mlp.fc1.weight": (64, 16),
    "decoder.blocks.0.mlp.fc1.bias": (64,),
    "decoder.blocks.0.mlp.fc2.weight": (16, 64),
    "decoder.blocks.0.mlp.fc2.bias": (16,),
    "decoder.norm.weight": (16,),
    "decoder.norm.bias": (16,),
    "decoder.head.weight": (1536, 16),
    "decoder.head.bias": (1536,),
}

# The reference's classifier keys (modeling_finetune.py, mean pooling: fc_norm, no norm keys),
# 5 classes.
REFERENCE_CLASSIFIER = {
    "patch_embed.proj.weight": (32, 3, 2, 16, 16),
    "patch_embed.proj.bias": (32,),
    "blocks.0.norm1.weight": (32,),
    "blocks.0.norm1.bias": (32,),
    "blocks.0.attn.q_bias": (32,),
    "blocks.0.attn.v_bias": (32,),
    "blocks.0.attn.qkv.weight": (96, 32),
    "blocks.0.attn.proj.weight": (32, 32),
    "blocks.0.attn.proj.bias": (32,),
    "blocks.0.norm2.weight": (32,),
    "blocks.0.norm2.bias": (32,),
    "blocks.0.mlp.fc1.weight": (128, 32),
    "blocks.0.mlp.fc1.bias": (128,),
    "blocks.0.mlp.fc2.weight": (32, 128),
    "blocks.0.mlp.fc2.bias": (32,),
    "blocks.1.norm1.weight": (32,),
    "blocks.1.norm1.bias": (32,),
    "blocks.1.attn.q_bias": (32,),
    "blocks.1.attn.v_bias": (32,),
    "blocks.1.attn.qkv.weight": (96, 32),
    "blocks.1.attn.proj.weight": (32, 32),
    "blocks.1.attn.proj.bias": (32,),
    "blocks.1.norm2.weight": (32,),
    "blocks.1.norm2.bias": (32,),
    "blocks.1.mlp.fc1.weight": (128, 32),
    "blocks.1.mlp.fc1.bias": (128,),
    "blocks.1.mlp.fc2.weight": (32, 128),
    "blocks.1.mlp.fc2.bias": (32,),
    "fc_norm.weight": (32,),
    "fc_norm.bias": (32,),
    "head.weight": (5, 32),
    "head.bias": (5,),
}


def _pretrain(**kw: object) -> torch.nn.Module:
    return create_pretrain_model("vit_small_patch16_224", **{**TINY, **TINY_DECODER, **kw}).eval()


def _classifier(num_classes: int = 5, **kw: object) -> torch.nn.Module:
    return create_classifier("vit_small_patch16_224", num_classes, **{**TINY, **kw}).eval()


def _official(reference: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint as the reference code would write it: its keys, random values."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) for k, shape in reference.items()}


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_our_keys_and_shapes_equal_the_reference() -> None:
    assert _shapes(_pretrain()) == REFERENCE_PRETRAIN
    assert _shapes(_classifier()) == REFERENCE_CLASSIFIER


@pytest.mark.parametrize("container", ["model", "module", None])
@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module.", "backbone."])
def test_official_pretrain_checkpoints_load_strictly(container: str | None, prefix: str) -> None:
    state = {prefix + k: v for k, v in _official(REFERENCE_PRETRAIN).items()}
    model = _pretrain()
    report = load_checkpoint(model, {container: state} if container else state, strict=True)
    assert not report.missing_keys and not report.unexpected_keys and not report.dropped
    for key, value in _official(REFERENCE_PRETRAIN).items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("container", ["model", "module"])
@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "backbone.", "encoder.", "module._orig_mod."])
def test_official_classifier_checkpoints_load_strictly(container: str, prefix: str) -> None:
    state = {prefix + k: v for k, v in _official(REFERENCE_CLASSIFIER).items()}
    model = _classifier()
    load_checkpoint(model, {container: state}, strict=True)
    for key, value in _official(REFERENCE_CLASSIFIER).items():
        assert torch.equal(model.state_dict()[key], value), key


def test_reference_file_with_pickled_args_loads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "vit_s_k710_dl_from_giant.pth"
    args = argparse.Namespace(model="vit_small_patch16_224", nb_classes=5, lr=1e-3)
    torch.save({"module": _official(REFERENCE_CLASSIFIER), "epoch": 9, "args": args}, path)
    model = _classifier()
    load_checkpoint(model, path, strict=True)
    assert torch.equal(model.head.weight, _official(REFERENCE_CLASSIFIER)["head.weight"])


def test_classifier_from_a_pretraining_checkpoint_keeps_the_encoder_only() -> None:
    official = _official(REFERENCE_PRETRAIN)
    model = _classifier()
    report = load_checkpoint(model, {"model": official})
    assert set(report.missing_keys) == {
        "fc_norm.weight",
        "fc_norm.bias",
        "head.weight",
        "head.bias",
    }
    assert not report.unexpected_keys
    assert "encoder.norm.weight" in report.dropped and "decoder.head.weight" in report.dropped
    assert "mask_token" in report.dropped and "encoder_to_decoder.weight" in report.dropped
    assert torch.equal(
        model.blocks[1].attn.qkv.weight, official["encoder.blocks.1.attn.qkv.weight"]
    )
    assert torch.equal(model.patch_embed.proj.weight, official["encoder.patch_embed.proj.weight"])
    with pytest.raises(IncompatibleCheckpoint, match="fc_norm"):
        load_checkpoint(_classifier(), {"model": official}, strict=True)


def test_head_of_another_size_is_dropped() -> None:
    model = _classifier(num_classes=7)
    head_before = model.head.weight.clone()
    report = load_checkpoint(model, {"model": _official(REFERENCE_CLASSIFIER)})
    assert set(report.dropped) == {"head.weight", "head.bias"}
    assert set(report.missing_keys) == {"head.weight", "head.bias"}
    assert torch.equal(model.head.weight, head_before)
    untouched = _classifier(num_classes=7)
    before = untouched.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(IncompatibleCheckpoint, match="head"):
        load_checkpoint(untouched, {"model": _official(REFERENCE_CLASSIFIER)}, strict=True)
    assert torch.equal(untouched.blocks[0].attn.qkv.weight, before)  # refused before loading


def test_other_frame_counts_and_sizes_regenerate_the_sinusoid_table() -> None:
    official = _official(REFERENCE_PRETRAIN)
    model = _classifier(num_frames=8, img_size=64)  # 4 x 4 x 4 tokens instead of 2 x 2 x 2
    report = load_checkpoint(model, {"model": official})
    assert not report.unexpected_keys
    assert torch.equal(model.pos_embed, sinusoid_table(64, 32))
    assert model(torch.randn(1, 3, 8, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize(("num_frames", "img_size"), [(4, 64), (8, 32)])
def test_a_learned_pos_embed_is_interpolated_to_the_grid(num_frames: int, img_size: int) -> None:
    state = _official(REFERENCE_CLASSIFIER)
    state["pos_embed"] = torch.full((1, 8, 32), 0.25)  # 2 x 2 x 2 grid
    state["pos_embed"][..., 0] = 1.0
    model = _classifier(num_frames=num_frames, img_size=img_size, use_learnable_pos_emb=True)
    load_checkpoint(model, {"model": state}, strict=True)
    tokens = model.num_patches
    assert model.pos_embed.shape == (1, tokens, 32) and tokens in (16, 32)
    torch.testing.assert_close(model.pos_embed[..., 1:], torch.full((1, tokens, 31), 0.25))
    torch.testing.assert_close(model.pos_embed[..., 0], torch.ones(1, tokens))
    # A fixed-table model has no use for it.
    report = load_checkpoint(_classifier(), {"model": state}, strict=True)
    assert "pos_embed" in report.dropped
    # Other frames and other size at once: the old grid is ambiguous.
    with pytest.raises(IncompatibleCheckpoint, match="pos_embed"):
        load_checkpoint(_classifier(num_frames=8, img_size=64, use_learnable_pos_emb=True), state)


def test_a_checkpoint_of_another_architecture_is_refused() -> None:
    with pytest.raises(IncompatibleCheckpoint, match="patch_embed"):
        load_checkpoint(_classifier(tubelet_size=4), {"model": _official(REFERENCE_CLASSIFIER)})
    with pytest.raises(IncompatibleCheckpoint, match="no state dict"):
        load_checkpoint(_classifier(), {"optimizer": {}, "epoch": 3})


def test_our_trainer_checkpoint_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _pretrain()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    video = torch.randn(1, 3, 4, 32, 32)
    mask = torch.tensor([[True, False] * 4])
    model(video, mask).square().mean().backward()
    optimizer.step()
    path = tmp_path / "checkpoint-1.pth"
    compiled_names = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            "model": compiled_names,
            "optimizer": optimizer.state_dict(),
            "epoch": 1,
            "scaler": {},
            "config": {"model": "vit_small_patch16_224"},
        },
        path,
    )
    torch.manual_seed(1)
    restored = _pretrain()
    load_checkpoint(restored, path, strict=True)
    torch.testing.assert_close(restored(video, mask), model(video, mask), rtol=0, atol=0)

"""Analytic multiply-accumulates of a VideoMAE V2 forward pass, in fvcore's convention.

Counted from the model's sizes, never by running it, so even ViT-g costs nothing (built on the
``meta`` device); ``torch.utils.flop_counter`` agrees exactly on a real forward. The throughput
benchmark turns the count into MFU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from services.trainer.videomae import (
    PretrainVisionTransformer,
    create_classifier,
    create_pretrain_model,
)

__all__ = ["forward_macs"]


def _block_macs(blk: nn.Module, tokens: int) -> int:
    # qkv + proj + the two attention matmuls (q k^T, attn v) + the MLP; norms and softmax
    # are left out, as fvcore's count that the spec's numbers use.
    dim = blk.attn.qkv.in_features
    hidden = blk.mlp.fc1.out_features
    return tokens * dim * 4 * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * hidden


def forward_macs(
    model_name_or_model: str | nn.Module,
    num_frames: int = 16,
    img_size: int = 224,
    encoder_mask_ratio: float = 0.0,
    decoder_mask_ratio: float | None = None,
) -> float:
    """Analytic multiply-accumulates of one clip's forward pass (fvcore convention).

    A name with ``encoder_mask_ratio`` 0 counts the classifier encoder (ViT-B 16x224: 180.3 G);
    a pre-training model or ratio > 0 counts encoder on visible tokens + decoder
    (ViT-B at 0.9: 35.4 G with ``decoder_mask_ratio`` None or 0, 25.8 G at 0.5).

    Args:
        model_name_or_model: a registry name or a built model (its sizes are read).
        num_frames: clip frames T.
        img_size: clip height = width.
        encoder_mask_ratio: tube-masking ratio.
        decoder_mask_ratio: running-cell ratio; None or 0 reconstructs every masked token.

    Returns:
        MACs per clip (multiply by 2 * clips for FLOPs).
    """
    model = model_name_or_model
    if isinstance(model, str):
        with torch.device("meta"):
            if encoder_mask_ratio > 0:
                model = create_pretrain_model(model)
            else:
                model = create_classifier(model, num_classes=0)
    pretrain = isinstance(model, PretrainVisionTransformer)
    enc = model.encoder if pretrain else model
    t, side = num_frames // enc.tubelet_size, img_size // enc.patch_size
    tokens = t * side * side
    visible = t * (side * side - int(encoder_mask_ratio * side * side))
    proj = enc.patch_embed.proj
    macs = tokens * proj.out_channels * proj.in_channels * math.prod(proj.kernel_size)
    macs += sum(_block_macs(blk, visible) for blk in enc.blocks)
    if not pretrain:
        if isinstance(enc.head, nn.Linear):
            macs += enc.head.in_features * enc.head.out_features
        return float(macs)
    kept = (
        tokens - visible if not decoder_mask_ratio else tokens - round(decoder_mask_ratio * tokens)
    )
    macs += visible * model.encoder_to_decoder.in_features * model.encoder_to_decoder.out_features
    macs += sum(_block_macs(blk, visible + kept) for blk in model.decoder.blocks)
    macs += kept * model.decoder.head.in_features * model.decoder.head.out_features
    return float(macs)

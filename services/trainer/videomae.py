"""VideoMAE V2: video ViT classifier and dual-masking pre-training model.

Papers:
    * `VideoMAE V2: Scaling Video Masked Autoencoders with Dual Masking` -
      https://arxiv.org/abs/2303.16727
    * `VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video
      Pre-Training` - https://arxiv.org/abs/2203.12602

Official code and weights: https://github.com/OpenGVLab/VideoMAEv2 (V1:
https://github.com/MCG-NJU/VideoMAE). State-dict keys equal the reference's exactly, so official
checkpoints load strictly and ours load into the reference; the transformer blocks are timm's
BEiT blocks, which already carry the reference parameter names (``qkv`` without bias plus
``q_bias``/``v_bias``). The facts this file implements come from the VideoMAE V2 paper (Wang et
al., CVPR 2023) and its reference implementation OpenGVLab/VideoMAEv2.

Differences from the reference, on purpose: the sinusoid table is a non-persistent buffer instead
of a tensor re-moved on every forward; builders live in a private registry dict, never timm's
global registry (the reference overwrites timm's image ViTs of the same names); checkpoint surgery
is one ``checkpoint_filter_fn``. The dual-masking generators live in ``masking.py`` and are
part of this module's public API; the Hugging Face ``transformers`` state-dict adapter is
``hf_adapter.py`` and the analytic FLOP count ``flops.py``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models.beit import Block
from torch.utils.checkpoint import checkpoint

from services.trainer.masking import RunningCellMasking, TubeMasking

__all__ = [
    "MODEL_NAMES",
    "IncompatibleCheckpoint",
    "LoadReport",
    "PatchEmbed",
    "PretrainVisionTransformer",
    "PretrainVisionTransformerDecoder",
    "RunningCellMasking",
    "TubeMasking",
    "VisionTransformer",
    "checkpoint_filter_fn",
    "create_classifier",
    "create_pretrain_model",
    "layer_id",
    "load_checkpoint",
    "pretrain_loss",
    "sinusoid_table",
    "video_to_tubes",
]

_logger = logging.getLogger(__name__)

# LayerNorm eps of every reference norm layer.
_norm_layer = partial(nn.LayerNorm, eps=1e-6)


class IncompatibleCheckpoint(ValueError):
    """A checkpoint whose tensors cannot fill the model (shapes or keys differ)."""


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """1-D sinusoid position table over the flattened token index, as the reference builds it.

    ``angle = pos / 10000 ** (2 * (j // 2) / dim)``, sin on even j, cos on odd j; computed in
    float64 like the reference's numpy code, then cast to float32.

    Returns:
        Tensor of shape (1, num_positions, dim).
    """
    position = torch.arange(num_positions, dtype=torch.float64, device="cpu")[:, None]
    j = torch.arange(dim, dtype=torch.float64, device="cpu")
    exponent = 2 * torch.div(j, 2, rounding_mode="floor") / dim
    angle = position / torch.pow(10000.0, exponent)  # N, dim
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float().unsqueeze(0)


class PatchEmbed(nn.Module):
    """Video to tubelet tokens: ``Conv3d`` with kernel = stride = (tubelet, p, p).

    Tokens are the conv output flattened as (t, h, w), t slowest.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if num_frames % tubelet_size:
            raise ValueError(
                f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.grid_size = (
            num_frames // tubelet_size,
            img_size // patch_size,
            img_size // patch_size,
        )
        self.num_patches = math.prod(self.grid_size)
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(
            in_chans, embed_dim, kernel_size=kernel, stride=kernel, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, N, C)."""
        expected = (self.num_frames, self.img_size, self.img_size)
        if tuple(x.shape[2:]) != expected:
            raise ValueError(f"video of shape {tuple(x.shape)} does not match T, H, W = {expected}")
        return self.proj(x).flatten(2).transpose(1, 2)


def _forward_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, grad_checkpointing: bool
) -> torch.Tensor:
    for blk in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(blk, x, use_reentrant=False)
        else:
            x = blk(x)
    return x


def _make_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    drop_rate: float,
    attn_drop_rate: float,
    drop_path_rate: float,
    init_values: float,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> nn.ModuleList:
    # Stochastic depth rises linearly from 0 to drop_path_rate over depth, as in the reference.
    dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
    return nn.ModuleList(
        Block(
            dim,
            num_heads,
            qkv_bias=True,
            mlp_ratio=mlp_ratio,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path=dpr[i],
            # None, not 0: beit creates gamma_1/gamma_2 (reference keys) only for values > 0.
            init_values=init_values or None,
            norm_layer=_norm_layer,
            device=device,
            dtype=dtype,
        )
        for i in range(depth)
    )


def _init_weights(m: nn.Module, linear_init: Callable[[torch.Tensor], Any]) -> None:
    """The reference's ``_init_weights``: Linear ``linear_init`` with zero bias, LayerNorm 1/0."""
    if isinstance(m, nn.Linear):
        linear_init(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# Pre-training encoder and decoder use xavier_uniform; the classifier trunc_normal(0.02), whose
# cut-off is absolute (+-2), so at std 0.02 it is in effect a plain normal.
_LINEAR_INITS: dict[str, Callable[[torch.Tensor], Any]] = {
    "xavier": nn.init.xavier_uniform_,
    "trunc_normal": partial(trunc_normal_, std=0.02),
}


class VisionTransformer(nn.Module):
    """Video ViT over tubelet tokens: the fine-tuning classifier and the pre-training encoder.

    With ``use_mean_pooling`` (the classifier) ``norm`` is Identity and the tokens are averaged
    into a fresh ``fc_norm`` -> dropout -> ``head``; without it (the pre-training encoder) the
    tokens leave through ``norm`` and there is no ``fc_norm``. There is no cls token anywhere.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_drop_rate: float = 0.0,
        init_values: float = 0.0,
        init_scale: float = 0.001,
        use_mean_pooling: bool = True,
        use_learnable_pos_emb: bool = False,
        weight_init: Literal["trunc_normal", "xavier"] = "trunc_normal",
        use_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            img_size: input height = width.
            patch_size: spatial tubelet size p.
            num_frames: input frames T.
            tubelet_size: temporal tubelet size.
            in_chans: input channels.
            num_classes: classifier outputs; 0 makes ``head`` an Identity (pre-training encoder).
            embed_dim: token width C.
            depth: number of blocks L.
            num_heads: attention heads.
            mlp_ratio: MLP hidden width / C.
            drop_rate: dropout after the position embedding and in the blocks' projections.
            attn_drop_rate: attention-probability dropout.
            drop_path_rate: stochastic depth of the last block (linear from 0).
            head_drop_rate: dropout between ``fc_norm`` and ``head``.
            init_values: layer-scale init; 0 = no layer scale (every V2 recipe).
            init_scale: factor on the head's trunc_normal(0.02) init (reference default 0.001).
            use_mean_pooling: classifier layout (``fc_norm``) instead of the encoder's ``norm``.
            use_learnable_pos_emb: a learned ``pos_embed`` parameter instead of the sinusoid.
            weight_init: ``trunc_normal`` (classifier) or ``xavier`` (pre-training encoder).
            use_checkpoint: activation checkpointing per block.
            device: where parameters are created (``meta`` builds without memory).
            dtype: parameter dtype.
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.depth = depth
        self.grad_checkpointing = use_checkpoint
        self.init_scale = init_scale

        self.patch_embed = PatchEmbed(
            img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim, **dd
        )
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches

        if use_learnable_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim, **dd))
        else:
            # Non-persistent: the reference state dict has no pos_embed key.
            self.register_buffer(
                "pos_embed", torch.empty(1, self.num_patches, embed_dim, **dd), persistent=False
            )
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = _make_blocks(
            embed_dim, depth, num_heads, mlp_ratio, drop_rate, attn_drop_rate,
            drop_path_rate, init_values, **dd,
        )  # fmt: skip
        self.norm = nn.Identity() if use_mean_pooling else _norm_layer(embed_dim, **dd)
        self.fc_norm = _norm_layer(embed_dim, **dd) if use_mean_pooling else nn.Identity()
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()

        if use_learnable_pos_emb:
            trunc_normal_(self.pos_embed, std=0.02)
        self.apply(partial(_init_weights, linear_init=_LINEAR_INITS[weight_init]))
        self._scale_head()
        self.init_non_persistent_buffers()

    def _scale_head(self) -> None:
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(self.init_scale)
                self.head.bias.mul_(self.init_scale)

    def init_non_persistent_buffers(self) -> None:
        """Fill the sinusoid table and the zero k_bias (again after ``to_empty`` from meta)."""
        if not isinstance(self.pos_embed, nn.Parameter):
            table = sinusoid_table(self.num_patches, self.embed_dim)
            self.pos_embed.copy_(table.to(self.pos_embed.device))
        for blk in self.blocks:
            blk.attn.init_non_persistent_buffers()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"} if isinstance(self.pos_embed, nn.Parameter) else set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        # Everything after the blocks is one last group (the catch-all matches any name), so
        # timm's layer decay groups parameters exactly as ``layer_id`` numbers them.
        return dict(stem=_STEM, blocks=_BLOCK, rest=r"")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head`` by a freshly initialised one with ``num_classes`` outputs."""
        self.num_classes = num_classes
        ref = self.fc_norm.weight if isinstance(self.fc_norm, nn.LayerNorm) else self.norm.weight
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
            _init_weights(self.head, _LINEAR_INITS["trunc_normal"])
            self._scale_head()
        else:
            self.head = nn.Identity()

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens of a clip, optionally only the visible ones.

        Args:
            x: video (B, 3, T, H, W), ImageNet-normalised.
            mask: boolean (B, N), True = masked (dropped before the blocks); every sample must
                mask the same number of tokens.

        Returns:
            (B, N_visible, C) after ``norm``.
        """
        x = self.patch_embed(x)  # B, N, C
        x = x + self.pos_embed.to(x.dtype)
        if mask is not None:
            if tuple(mask.shape) != (x.shape[0], self.num_patches):
                raise ValueError(
                    f"mask of shape {tuple(mask.shape)}, expected {(x.shape[0], self.num_patches)}"
                )
            x = x[~mask].reshape(x.shape[0], -1, x.shape[-1])  # B, N_vis, C
        x = self.pos_drop(x)
        x = _forward_blocks(self.blocks, x, self.grad_checkpointing)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C) tokens -> mean pooling -> fc_norm -> dropout -> head: (B, num_classes)."""
        x = self.fc_norm(x.mean(dim=1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


class PretrainVisionTransformerDecoder(nn.Module):
    """Decoder blocks -> ``norm`` -> ``head`` predicting one (3 * tubelet * p * p) tube a token."""

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 4,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        out_dim: int = 1536,
        drop_path_rate: float = 0.0,
        init_values: float = 0.0,
        use_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.grad_checkpointing = use_checkpoint
        self.blocks = _make_blocks(
            embed_dim, depth, num_heads, mlp_ratio, 0.0, 0.0, drop_path_rate, init_values, **dd
        )
        self.norm = _norm_layer(embed_dim, **dd)
        self.head = nn.Linear(embed_dim, out_dim, **dd)
        self.apply(partial(_init_weights, linear_init=_LINEAR_INITS["xavier"]))

    def forward(self, x: torch.Tensor, return_token_num: int) -> torch.Tensor:
        """(B, N_vis + N_keep, C_dec) -> predictions of the last ``return_token_num`` tokens."""
        x = _forward_blocks(self.blocks, x, self.grad_checkpointing)
        x = x[:, x.shape[1] - return_token_num :]  # B, N_keep, C_dec
        return self.head(self.norm(x))


class PretrainVisionTransformer(nn.Module):
    """Dual-masking pre-training model: encoder on visible tokens, decoder on kept positions.

    encoder (visible tokens) -> ``encoder_to_decoder`` -> append ``mask_token`` copies at every
    position the decoder keeps (visible ones included) -> decoder position table -> decoder.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        decoder_embed_dim: int = 384,
        decoder_depth: int = 4,
        decoder_num_heads: int = 6,
        decoder_mlp_ratio: float | None = None,
        drop_path_rate: float = 0.0,
        init_values: float = 0.0,
        use_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim, depth,
            num_heads, mlp_ratio, drop_path_rate, init_values, use_checkpoint: as
                ``VisionTransformer`` (the encoder).
            decoder_embed_dim: decoder token width.
            decoder_depth: decoder blocks (4 in every V2 recipe).
            decoder_num_heads: decoder attention heads.
            decoder_mlp_ratio: decoder MLP ratio; None = ``mlp_ratio``, as the reference passes
                one ratio to both (ViT-g's decoder hidden width is int(512 * 48 / 11) = 2234).
            device: where parameters are created (``meta`` builds without memory).
            dtype: parameter dtype.
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.encoder = VisionTransformer(
            img_size=img_size, patch_size=patch_size, num_frames=num_frames,
            tubelet_size=tubelet_size, in_chans=in_chans, num_classes=0, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
            init_values=init_values, use_mean_pooling=False, weight_init="xavier",
            use_checkpoint=use_checkpoint, **dd,
        )  # fmt: skip
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.grid_size = self.encoder.grid_size
        self.num_patches = self.encoder.num_patches
        self.embed_dim = embed_dim
        self.depth = depth
        self.decoder_embed_dim = decoder_embed_dim

        # The reference wrapper never applies its init: this Linear keeps PyTorch's default.
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_embed_dim, bias=False, **dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim, **dd))
        trunc_normal_(self.mask_token, std=0.02)
        self.decoder = PretrainVisionTransformerDecoder(
            embed_dim=decoder_embed_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio if decoder_mlp_ratio is None else decoder_mlp_ratio,
            out_dim=in_chans * tubelet_size * patch_size * patch_size,
            drop_path_rate=drop_path_rate,
            init_values=init_values,
            use_checkpoint=use_checkpoint,
            **dd,
        )
        # Non-persistent: the reference keeps the decoder table outside the state dict too.
        self.register_buffer(
            "pos_embed", torch.empty(1, self.num_patches, decoder_embed_dim, **dd), persistent=False
        )
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        """Fill the sinusoid tables and zero k_bias buffers (again after ``to_empty``)."""
        self.encoder.init_non_persistent_buffers()
        self.pos_embed.copy_(
            sinusoid_table(self.num_patches, self.decoder_embed_dim).to(self.pos_embed.device)
        )
        for blk in self.decoder.blocks:
            blk.attn.init_non_persistent_buffers()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)
        self.decoder.grad_checkpointing = enable

    def forward(
        self,
        video: torch.Tensor,
        encoder_mask: torch.Tensor,
        decoder_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the tubes of the positions the decoder keeps.

        Args:
            video: (B, 3, T, H, W), ImageNet-normalised.
            encoder_mask: boolean (B, N), True = masked (hidden from the encoder).
            decoder_mask: boolean (B, N), True = dropped (not reconstructed); None reconstructs
                every encoder-masked token, as VideoMAE V1 did.

        Returns:
            (B, N_keep, 3 * tubelet * p * p), kept positions in token order.
        """
        keep = encoder_mask if decoder_mask is None else ~decoder_mask
        x_vis = self.encoder_to_decoder(self.encoder.forward_features(video, encoder_mask))
        batch, _, dim = x_vis.shape  # B, N_vis, C_dec
        # Visible tokens stay in their order; the table is gathered to match instead.
        pos = self.pos_embed.to(video.dtype).expand(batch, -1, -1)
        pos_vis = pos[~encoder_mask].reshape(batch, -1, dim)
        pos_keep = pos[keep].reshape(batch, -1, dim)  # B, N_keep, C_dec
        x = torch.cat([x_vis + pos_vis, self.mask_token + pos_keep], dim=1)
        return self.decoder(x, pos_keep.shape[1])


# Prefixes DDP and torch.compile put on parameter names.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(name: str, prefixes: tuple[str, ...] = _WRAPPER_PREFIXES) -> str:
    while name.startswith(prefixes):
        name = name.split(".", 1)[1]
    return name


# Encoder parameter names (the pre-training model's under ``encoder.``) of the stem and blocks.
_STEM = r"^(?:encoder\.)?(?:patch_embed|pos_embed)\b"
_BLOCK = r"^(?:encoder\.)?blocks\.(\d+)\."


def layer_id(param_name: str, depth: int) -> int:
    """The layer of a parameter for layer-wise lr decay (BEiT, MAE ``lr_decay.py``).

    Args:
        param_name: a name of ``named_parameters()`` of either model, DDP / compile prefixes
            allowed.
        depth: the encoder's number of blocks L.

    Returns:
        0 for the patch embedding and position table, i + 1 for encoder block i, L + 1 for
        everything after the blocks (norms, head, the pre-training decoder and mask token).
    """
    name = _strip_prefixes(param_name)
    if re.match(_STEM, name):
        return 0
    block = re.match(_BLOCK, name)
    return int(block.group(1)) + 1 if block else depth + 1


def video_to_tubes(video: torch.Tensor, tubelet_size: int, patch_size: int) -> torch.Tensor:
    """Cut a clip into tubes in token order.

    Args:
        video: (B, C, T, H, W).

    Returns:
        (B, N, tubelet * p * p, C), the reference's ``b (t h w) (p0 p1 p2) c`` layout.
    """
    b, c, t, h, w = video.shape
    x = video.reshape(b, c, t // tubelet_size, tubelet_size, h // patch_size, patch_size,
                      w // patch_size, patch_size)  # fmt: skip
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, T', H', W', t, p, p, C
    return x.reshape(b, -1, tubelet_size * patch_size * patch_size, c)


def pretrain_loss(
    model: nn.Module,
    video: torch.Tensor,
    prediction: torch.Tensor,
    encoder_mask: torch.Tensor,
    decoder_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Normalised-pixel MSE over the tokens both encoder-masked and decoder-kept.

    The target un-normalises the clip (ImageNet mean/std), cuts it into tubes of the model's
    tubelet and patch size, normalises each tube per channel by its mean and unbiased std (+1e-6)
    and flattens it as (tubelet * p * p * 3) — the order the decoder head predicts.

    Args:
        model: the plain pre-training model (not its DDP / compiled wrapper).
        video: (B, 3, T, H, W), the model's input.
        prediction: (B, N_keep, 3 * tubelet * p * p), the model's output.
        encoder_mask: boolean (B, N), True = masked.
        decoder_mask: boolean (B, N), True = not reconstructed; None = every masked token.

    Returns:
        Scalar float32 loss.
    """
    keep = encoder_mask if decoder_mask is None else ~decoder_mask
    batch = video.shape[0]
    with torch.no_grad():
        mean = torch.as_tensor(IMAGENET_DEFAULT_MEAN, device=video.device).view(1, 3, 1, 1, 1)
        std = torch.as_tensor(IMAGENET_DEFAULT_STD, device=video.device).view(1, 3, 1, 1, 1)
        tubes = video_to_tubes(video.float() * std + mean, model.tubelet_size, model.patch_size)
        tubes = (tubes - tubes.mean(dim=-2, keepdim=True)) / (
            tubes.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6
        )
        target = tubes.flatten(2)[keep].reshape(batch, -1, prediction.shape[-1])  # B, N_keep, D
        weight = encoder_mask[keep].reshape(batch, -1).float()  # 1 = masked and kept
    per_token = (prediction.float() - target).pow(2).mean(dim=-1)  # B, N_keep
    return (per_token * weight).sum() / weight.sum()


@dataclass(frozen=True)
class LoadReport:
    """What ``load_checkpoint`` did: model keys left unfilled, checkpoint keys unused or dropped."""

    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()
    dropped: Mapping[str, str] = field(default_factory=dict)


def _unwrap_checkpoint(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, Mapping):
        # UNVERIFIED which container official files use, so try both, then timm's name.
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                return _unwrap_checkpoint(obj[key])
    raise IncompatibleCheckpoint(
        "no state dict found: expected tensors, or one under 'model', 'module' or 'state_dict'"
    )


def _resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Interpolate a learned (1, N_old, C) table to the token grid (T', H', W')."""
    t, h, w = grid
    n_old, dim = pos_embed.shape[1], pos_embed.shape[2]
    side = math.isqrt(n_old // t) if n_old % t == 0 else 0
    if side and side * side * t == n_old:
        old = (t, side, side)  # same frames, other size: the reference's only case
    elif n_old % (h * w) == 0:
        old = (n_old // (h * w), h, w)  # same size, other frames
    else:
        raise IncompatibleCheckpoint(
            f"pos_embed of {n_old} tokens keeps neither {t} temporal slots nor the {h}x{w} "
            f"grid of {grid}: frames and size cannot both change"
        )
    x = pos_embed.float().reshape(1, *old, dim).permute(0, 4, 1, 2, 3)  # 1, C, T, H, W
    x = F.interpolate(x, size=grid, mode="trilinear", align_corners=False)
    return x.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(pos_embed.dtype)


def checkpoint_filter_fn(
    state_dict: Mapping[str, torch.Tensor],
    model: nn.Module,
    head_rows: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Turn an official or own state dict into one ``model`` can load.

    Strips ``_orig_mod.``, ``module.`` and ``backbone.`` prefixes; for a classifier also
    ``encoder.``, dropping the pre-training decoder and, with ``fc_norm``, the encoder ``norm``;
    keeps only the ``head_rows`` of a head when given (a label map: K710 -> K400, see
    ``label_maps``), else drops a head of another shape; drops any fixed position table;
    interpolates a learned ``pos_embed`` to the model's token grid.

    Returns:
        The filtered state dict and ``{dropped key: reason}``.
    """
    target = model.state_dict()
    classifier = isinstance(model, VisionTransformer)
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    for key, value in state_dict.items():
        name = _strip_prefixes(key, (*_WRAPPER_PREFIXES, "backbone."))
        if classifier:
            if name.startswith(("decoder.", "encoder_to_decoder.", "mask_token")):
                dropped[key] = "pre-training decoder: a classifier has none"
                continue
            name = name.removeprefix("encoder.")
            if name.startswith("norm.") and name not in target:
                dropped[key] = "encoder norm: the classifier pools into a fresh fc_norm"
                continue
        if name.endswith("pos_embed") and name not in target:
            dropped[key] = "fixed sinusoid table: regenerated for this model's token grid"
            continue
        if head_rows is not None and name in ("head.weight", "head.bias"):
            value = value[list(head_rows)]
        if name.startswith("head.") and name in target and target[name].shape != value.shape:
            dropped[key] = (
                f"head of shape {tuple(value.shape)}, model has {tuple(target[name].shape)}"
            )
            continue
        if name.endswith("pos_embed") and target[name].shape != value.shape:
            _logger.info("resizing %s from %s", key, tuple(value.shape))
            value = _resize_pos_embed(value, model.grid_size)
        if name in target and target[name].shape != value.shape:
            raise IncompatibleCheckpoint(
                f"{key}: checkpoint shape {tuple(value.shape)}, model {tuple(target[name].shape)}"
            )
        out[name] = value
    return out, dropped


def load_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Any],
    strict: bool = False,
    weights_only: bool = True,
    head_rows: Sequence[int] | None = None,
) -> LoadReport:
    """Load official VideoMAE V2 weights or a checkpoint written by our trainer.

    Args:
        model: a plain ``VisionTransformer`` or ``PretrainVisionTransformer``.
        path_or_state_dict: a ``.pth`` file, a state dict, or a checkpoint dict holding one under
            ``model`` or ``module`` (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``).
        strict: raise ``IncompatibleCheckpoint`` unless every model key is filled and every
            checkpoint key used.
        weights_only: unpickle tensors and plain containers only (``argparse.Namespace`` allowed,
            the reference stores its ``args`` as one); False trusts the file completely.
        head_rows: the rows of the checkpoint's head to keep, one per class of ``model``
            (``label_maps.head_label_map``); None keeps a head of the right shape only.

    Returns:
        A ``LoadReport``.
    """
    if isinstance(path_or_state_dict, str | Path):
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path_or_state_dict, map_location="cpu", weights_only=weights_only)
    else:
        obj = path_or_state_dict
    state_dict, dropped = checkpoint_filter_fn(_unwrap_checkpoint(obj), model, head_rows)
    expected = model.state_dict().keys()
    missing = tuple(k for k in expected if k not in state_dict)
    unexpected = tuple(k for k in state_dict if k not in expected)
    # Checked before loading, so a refused checkpoint leaves the model untouched.
    if strict and (missing or unexpected):
        raise IncompatibleCheckpoint(
            f"strict load: missing {list(missing)}, unexpected {list(unexpected)}, "
            f"dropped {dropped}"
        )
    model.load_state_dict(state_dict, strict=False)
    _logger.info(
        "loaded %d tensors; %d missing, %d unexpected, %d dropped",
        len(state_dict) - len(unexpected), len(missing), len(unexpected), len(dropped),
    )  # fmt: skip
    for key, reason in dropped.items():
        _logger.debug("dropped %s: %s", key, reason)
    return LoadReport(missing, unexpected, dropped)


_Kind = Literal["pretrain", "classifier"]


def _create_videomae(kind: _Kind, model_args: dict[str, Any], **kwargs: Any) -> nn.Module:
    cls = PretrainVisionTransformer if kind == "pretrain" else VisionTransformer
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
    if kind == "classifier":
        model_args = {k: v for k, v in model_args.items() if not k.startswith("decoder_")}
    return cls(**{**model_args, **kwargs})


def _vit_small_patch16_224(kind: _Kind, **kwargs: Any) -> nn.Module:
    model_args = dict(
        patch_size=16, embed_dim=384, depth=12, num_heads=6,
        decoder_embed_dim=192, decoder_num_heads=3,
    )  # fmt: skip
    return _create_videomae(kind, model_args, **kwargs)


def _vit_base_patch16_224(kind: _Kind, **kwargs: Any) -> nn.Module:
    model_args = dict(
        patch_size=16, embed_dim=768, depth=12, num_heads=12,
        decoder_embed_dim=384, decoder_num_heads=6,
    )  # fmt: skip
    return _create_videomae(kind, model_args, **kwargs)


def _vit_large_patch16_224(kind: _Kind, **kwargs: Any) -> nn.Module:
    model_args = dict(
        patch_size=16, embed_dim=1024, depth=24, num_heads=16,
        decoder_embed_dim=512, decoder_num_heads=8,
    )  # fmt: skip
    return _create_videomae(kind, model_args, **kwargs)


def _vit_huge_patch16_224(kind: _Kind, **kwargs: Any) -> nn.Module:
    model_args = dict(
        patch_size=16, embed_dim=1280, depth=32, num_heads=16,
        decoder_embed_dim=512, decoder_num_heads=8,
    )  # fmt: skip
    return _create_videomae(kind, model_args, **kwargs)


def _vit_giant_patch14_224(kind: _Kind, **kwargs: Any) -> nn.Module:
    # mlp_ratio 48/11: hidden width 6144 at 1408.
    model_args = dict(
        patch_size=14, embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11,
        decoder_embed_dim=512, decoder_num_heads=8,
    )  # fmt: skip
    return _create_videomae(kind, model_args, **kwargs)


# Our own registry: registering into timm's would overwrite its image ViTs of the same names.
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vit_small_patch16_224": _vit_small_patch16_224,
    "vit_base_patch16_224": _vit_base_patch16_224,
    "vit_large_patch16_224": _vit_large_patch16_224,
    "vit_huge_patch16_224": _vit_huge_patch16_224,
    "vit_giant_patch14_224": _vit_giant_patch14_224,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name]


def create_pretrain_model(name: str, **overrides: Any) -> PretrainVisionTransformer:
    """Build the dual-masking pre-training model of a registered size.

    Args:
        name: one of ``MODEL_NAMES``.
        **overrides: ``PretrainVisionTransformer`` keywords (num_frames, img_size,
            tubelet_size, decoder_depth, drop_path_rate, use_checkpoint, embed_dim, depth,
            num_heads, decoder_embed_dim, decoder_num_heads, device, ...); others raise
            ``ValueError``.
    """
    return _builder(name)("pretrain", **overrides)


def create_classifier(name: str, num_classes: int, **overrides: Any) -> VisionTransformer:
    """Build the fine-tuning classifier of a registered size.

    Args:
        name: one of ``MODEL_NAMES``.
        num_classes: classifier outputs (0: no head).
        **overrides: ``VisionTransformer`` keywords (num_frames, img_size, tubelet_size,
            drop_path_rate, head_drop_rate, use_checkpoint, embed_dim, depth, num_heads,
            device, ...); others raise ``ValueError``.
    """
    return _builder(name)("classifier", num_classes=num_classes, **overrides)

"""VideoMAE V2 dual masking: tube masks for the encoder, running-cell masks for the decoder.

Both return boolean token masks in the model's token order (t, h, w; t slowest), True = masked
(encoder) or dropped (decoder). Every draw comes from an explicit ``torch.Generator``, never a
global RNG: the dataset seeds one per item from (seed, epoch, index), so a resumed run or another
worker count draws the same masks for the same sample.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RunningCellMasking", "TubeMasking"]


def _check_grid(grid_size: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(grid_size) != 3 or min(grid_size) <= 0:
        raise ValueError(f"grid_size must be 3 positive ints (T', H', W'), got {grid_size}")
    return tuple(int(g) for g in grid_size)


class TubeMasking:
    """Tube masking: one random spatial mask repeated over every temporal slot.

    ``int(mask_ratio * H' * W')`` patches are masked per slot (ratio 0.9 on 8x14x14: 176 of 196,
    so 8 * 20 = 160 tokens stay visible).

    Args:
        grid_size: token grid (T', H', W'), the model's ``grid_size``.
        mask_ratio: fraction of each slot masked.
    """

    def __init__(self, grid_size: tuple[int, int, int], mask_ratio: float = 0.9) -> None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.grid_size = _check_grid(grid_size)
        slot = self.grid_size[1] * self.grid_size[2]
        self.num_masked_per_slot = int(mask_ratio * slot)
        self.num_visible = self.grid_size[0] * (slot - self.num_masked_per_slot)

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        """One clip's mask: bool (N,), True = hidden from the encoder."""
        frames, height, width = self.grid_size
        masked = torch.randperm(height * width, generator=generator)[: self.num_masked_per_slot]
        slot = torch.zeros(height * width, dtype=torch.bool)
        slot[masked] = True
        return slot.repeat(frames)


class RunningCellMasking:
    """Running-cell masking: a 2x2 cell pattern that shifts by one position per temporal slot.

    With ratio 0.5 the cell queue is [1, 1, 0, 0]; slot ``f`` of map ``p`` reads the queue from
    position ``p + f + 1`` (the reference advances the pointer before reading), reshapes it to
    2x2 and tiles it over the H' x W' grid. The four maps are precomputed; a draw picks one.
    Ratio 0 keeps every encoder-masked token and drops every visible one (VideoMAE V1), so
    that draw needs the encoder mask.

    Args:
        grid_size: token grid (T', H', W'), the model's ``grid_size``.
        mask_ratio: 0, 0.25, 0.5 or 0.75 (masked positions of the 4 in a cell).
    """

    def __init__(self, grid_size: tuple[int, int, int], mask_ratio: float = 0.5) -> None:
        self.grid_size = _check_grid(grid_size)
        self.mask_ratio = mask_ratio
        masked_per_cell = int(4 * mask_ratio)
        if mask_ratio != 0 and not 0 < masked_per_cell < 4:
            raise ValueError(f"mask_ratio must be 0 or in [0.25, 1), got {mask_ratio}")
        frames, height, width = self.grid_size
        queue = np.array([1] * masked_per_cell + [0] * (4 - masked_per_cell), dtype=bool)
        reps = (-(-height // 2), -(-width // 2))  # ceil: odd grids are cropped after tiling
        maps = []
        for start in range(4):
            slots = []
            for f in range(frames):
                cell = queue[(np.arange(4) + start + f + 1) % 4].reshape(2, 2)
                slots.append(np.tile(cell, reps)[:height, :width].reshape(-1))
            maps.append(np.concatenate(slots))
        self.maps = torch.from_numpy(np.stack(maps))  # 4, N

    def __call__(
        self, generator: torch.Generator, encoder_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One clip's decoder mask: bool (N,), True = not reconstructed.

        Args:
            generator: the item's generator.
            encoder_mask: the clip's encoder mask; required when ``mask_ratio`` is 0.
        """
        if self.mask_ratio == 0:
            if encoder_mask is None:
                raise ValueError("RunningCellMasking with mask_ratio 0 needs the encoder_mask")
            return ~encoder_mask
        return self.maps[int(torch.randint(4, (), generator=generator))].clone()

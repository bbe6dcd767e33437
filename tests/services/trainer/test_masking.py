"""Tube and running-cell masks against the reference's statistics and patterns."""

from __future__ import annotations

import pytest
import torch

from services.trainer.masking import RunningCellMasking, TubeMasking

GRID = (8, 14, 14)  # 16x224x224 clip, tubelet 2, patch 16


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tube_mask_keeps_160_tokens_with_one_spatial_pattern() -> None:
    masking = TubeMasking(GRID, mask_ratio=0.9)
    mask = masking(_gen(0))
    assert mask.dtype == torch.bool and mask.shape == (8 * 196,)
    slots = mask.reshape(8, 196)
    assert (slots.sum(dim=1) == 176).all()  # int(0.9 * 196) masked per frame slot
    assert (~mask).sum() == 160 == masking.num_visible
    assert (slots == slots[0]).all()  # a tube: the same spatial pattern in every slot


def test_tube_masks_come_from_the_given_generator_only() -> None:
    masking = TubeMasking(GRID, mask_ratio=0.9)
    torch.manual_seed(0)
    first = masking(_gen(7))
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(first, TubeMasking(GRID, 0.9)(_gen(7)))
    generator = _gen(7)
    draws = {tuple(masking(generator).tolist()) for _ in range(30)}  # successive clips differ
    assert len(draws) == 30


def test_tube_mask_ratio_zero_masks_nothing() -> None:
    assert not TubeMasking(GRID, mask_ratio=0.0)(_gen(0)).any()
    with pytest.raises(ValueError, match="mask_ratio"):
        TubeMasking(GRID, mask_ratio=1.0)
    with pytest.raises(ValueError, match="grid_size"):
        TubeMasking((14, 14), mask_ratio=0.9)


# The reference queue is [1, 1, 0, 0]; slot f of map p reads it from position p + f + 1.
CELLS_OF_MAP_0 = [
    [[1, 0], [0, 1]],
    [[0, 0], [1, 1]],
    [[0, 1], [1, 0]],
    [[1, 1], [0, 0]],
]


def test_running_cell_pattern_shifts_by_one_per_slot() -> None:
    masking = RunningCellMasking(GRID, mask_ratio=0.5)
    assert masking.maps.shape == (4, 8 * 196) and masking.maps.dtype == torch.bool
    for p in range(4):
        slots = masking.maps[p].reshape(8, 14, 14)
        for f in range(8):
            cell = torch.tensor(CELLS_OF_MAP_0[(p + f) % 4], dtype=torch.bool)
            assert torch.equal(slots[f], cell.repeat(7, 7)), (p, f)
    # Every map drops exactly half of each slot, and each position is kept in 2 of 4 slots.
    per_slot = masking.maps.reshape(4, 8, 196).sum(dim=-1)
    assert (per_slot == 98).all()
    assert (masking.maps.reshape(4, 2, 4, 196).sum(dim=2) == 2).all()


def test_running_cell_draws_one_of_four_maps_reproducibly() -> None:
    masking = RunningCellMasking(GRID, mask_ratio=0.5)
    generator = _gen(1)
    draws = [masking(generator) for _ in range(32)]
    picked = {next(p for p in range(4) if torch.equal(d, masking.maps[p])) for d in draws}
    assert picked == {0, 1, 2, 3}
    assert torch.equal(masking(_gen(9)), RunningCellMasking(GRID, 0.5)(_gen(9)))


def test_running_cell_on_odd_grid_crops_the_tiling() -> None:
    mask = RunningCellMasking((2, 3, 5), mask_ratio=0.5).maps[0].reshape(2, 3, 5)
    assert torch.equal(mask[0, :2, :2], torch.tensor(CELLS_OF_MAP_0[0], dtype=torch.bool))
    assert torch.equal(mask[0, 2, :], torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool))


def test_running_cell_ratio_zero_reconstructs_every_masked_token() -> None:
    encoder_mask = TubeMasking(GRID, 0.9)(_gen(0))
    decoder = RunningCellMasking(GRID, mask_ratio=0.0)
    assert torch.equal(decoder(_gen(0), encoder_mask), ~encoder_mask)
    with pytest.raises(ValueError, match="encoder_mask"):
        decoder(_gen(0))
    with pytest.raises(ValueError, match="mask_ratio"):
        RunningCellMasking(GRID, mask_ratio=1.0)


def test_dual_masks_leave_half_the_masked_tokens_to_the_loss() -> None:
    generator = _gen(3)
    encoder_mask = TubeMasking(GRID, 0.9)(generator)
    decoder_mask = RunningCellMasking(GRID, 0.5)(generator)
    kept = ~decoder_mask
    assert kept.sum() == 784  # mask tokens go to every kept position, visible ones included
    # Per slot 176 masked and 98 kept of 196 overlap in 176 + 98 - 196 = 78 to 98 tokens.
    in_loss = (encoder_mask & kept).reshape(8, 196).sum(dim=1)
    assert ((in_loss >= 78) & (in_loss <= 98)).all()

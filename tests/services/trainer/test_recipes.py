"""The recipes against the reference's published values (OpenGVLab/VideoMAEv2 scripts, the
VideoMAE V2 paper, Wang et al., CVPR 2023)."""

from __future__ import annotations

import pytest

from pipelines.steps import finetune_recipe
from services.trainer.recipes import RECIPES, augmented_epochs, get_recipe
from services.trainer.training import build_schedule


def test_pretrain_lr_counts_videos_not_augmented_copies() -> None:
    # scripts/pretrain/vit_b_hybrid_pt.sh: 32 videos per GPU on 64 GPUs, lr 1e-3 per 256
    # videos (run_mae_pretraining.py: total_batch_size = batch_size * num_tasks) -> 8e-3,
    # warmup_lr 1e-6 -> 8e-6 and min_lr 1e-5 -> 8e-5; num_sample 4 does not enter.
    config = get_recipe("vit_b_pretrain_800e")
    assert (config.data.batch_size, config.data.num_sample) == (32, 4)
    schedule = build_schedule(config, world=64, steps_per_epoch=100)
    assert schedule.peak == pytest.approx(8e-3)
    assert schedule.warmup_lr == pytest.approx(8e-6)
    assert schedule.min_lr == pytest.approx(8e-5)
    # ViT-g: lr 6e-4 per 256 videos.
    giant = build_schedule(get_recipe("vit_g_pretrain_1200e"), world=64, steps_per_epoch=100)
    assert giant.peak == pytest.approx(6e-4 * 32 * 64 / 256)


def test_epoch_names_count_augmented_passes() -> None:
    # vit_b_hybrid_pt.sh: --epochs 200 --num_sample 4 --warmup_epochs 20 is "800e";
    # vit_g_hybrid_pt.sh: --epochs 300 --num_sample 4 --warmup_epochs 30 is "1200e".
    for name, loader_epochs, warmup, named in (
        ("vit_b_pretrain_800e", 200, 20, 800),
        ("vit_g_pretrain_1200e", 300, 30, 1200),
    ):
        config = get_recipe(name)
        assert (config.optim.epochs, config.optim.warmup_epochs) == (loader_epochs, warmup)
        assert config.data.num_sample == 4 and augmented_epochs(config) == named
        schedule = build_schedule(config, world=8, steps_per_epoch=10)
        assert schedule.total == loader_epochs * 10 and schedule.warmup == warmup * 10


def test_vit_g_finetune_recipes() -> None:
    # The paper's ViT-g fine-tuning settings (reference scripts/finetune/).
    k400 = get_recipe("vit_g_k400_finetune")
    assert k400.model.name == "vit_giant_patch14_224"
    assert (k400.optim.base_lr, k400.optim.layer_decay, k400.optim.weight_decay) == (
        1e-3,
        0.9,
        0.1,
    )
    assert (k400.model.drop_path_rate, k400.optim.epochs) == (0.2, 30)
    ssv2 = get_recipe("vit_g_ssv2_finetune")
    assert (ssv2.optim.base_lr, ssv2.model.drop_path_rate, ssv2.optim.epochs) == (3e-4, 0.25, 20)
    assert ssv2.data.tsn_segments and not ssv2.data.flip and ssv2.data.test_segments == 2
    k710 = get_recipe("vit_g_k710_finetune")
    assert (k710.optim.clip_grad, k710.optim.epochs, k710.optim.layer_decay) == (5.0, 35, 0.9)
    to_k400 = get_recipe("vit_g_k710_to_k400_finetune")
    assert (to_k400.optim.epochs, to_k400.optim.base_lr) == (3, 1e-5)


def test_small_benchmarks_fine_tune_with_layer_decay_0_9() -> None:
    # UCF101 / HMDB51 start from a Kinetics-fine-tuned model: layer decay 0.9, not ViT-B
    # Kinetics' 0.75; UCF101 50 epochs, drop path 0.35, head dropout 0.5; HMDB51 15 epochs,
    # lr 5e-4, stride 2.
    for size in ("", "vit_g_"):
        ucf, hmdb = get_recipe(f"{size}ucf101_finetune"), get_recipe(f"{size}hmdb51_finetune")
        assert ucf.optim.layer_decay == hmdb.optim.layer_decay == 0.9
        assert (ucf.optim.epochs, ucf.model.drop_path_rate, ucf.model.head_drop_rate) == (
            50,
            0.35,
            0.5,
        )
        assert (hmdb.optim.epochs, hmdb.optim.base_lr, hmdb.data.sampling_rate) == (15, 5e-4, 2)
    assert get_recipe("vit_g_ucf101_finetune").model.name == "vit_giant_patch14_224"


def test_pipeline_picks_each_size_its_recipe() -> None:
    assert finetune_recipe("giant", "ucf101") == "vit_g_ucf101_finetune"
    assert finetune_recipe("base", "hmdb51") == "hmdb51_finetune"
    assert finetune_recipe("tiny", "synthetic") == "tiny_finetune"
    assert all(f"vit_g_{b}_finetune" in RECIPES for b in ("k400", "ssv2", "ucf101", "hmdb51"))

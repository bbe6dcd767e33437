"""Export to Hugging Face transformers VideoMAE: strict load, same tables, same outputs."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from services.trainer.hf_adapter import (  # noqa: E402
    export_transformers_state_dict,
    import_transformers_state_dict,
    transformers_config,
)
from services.trainer.masking import TubeMasking  # noqa: E402
from services.trainer.videomae import create_classifier, create_pretrain_model  # noqa: E402

TINY = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4, img_size=32)
TINY_DECODER = dict(decoder_embed_dim=16, decoder_num_heads=2, decoder_depth=2)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    # Zero biases and unit norms would hide a swapped query/value bias or norm.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def _hf(cls: type, model: torch.nn.Module) -> torch.nn.Module:
    config = transformers.VideoMAEConfig(**transformers_config(model))
    return cls(config).eval()


@pytest.fixture(scope="module")
def pretrain() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomise(create_pretrain_model("vit_small_patch16_224", **TINY, **TINY_DECODER))


def test_pretrain_export_loads_strictly_and_matches_the_encoder(pretrain: torch.nn.Module) -> None:
    hf = _hf(transformers.VideoMAEForPreTraining, pretrain)
    hf.load_state_dict(export_transformers_state_dict(pretrain), strict=True)
    # transformers keeps its own sinusoid tables as plain attributes: they must equal ours.
    torch.testing.assert_close(
        hf.videomae.embeddings.position_embeddings, pretrain.encoder.pos_embed
    )
    torch.testing.assert_close(hf.position_embeddings, pretrain.pos_embed)

    video = torch.randn(2, 3, 4, 32, 32)  # ours B x C x T x H x W, theirs B x T x C x H x W
    with torch.no_grad():
        ours = pretrain.encoder.forward_features(video)
        theirs = hf.videomae(video.transpose(1, 2)).last_hidden_state
    assert ours.shape == (2, pretrain.num_patches, 32)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_pretrain_export_gives_the_same_reconstruction(pretrain: torch.nn.Module) -> None:
    hf = _hf(transformers.VideoMAEForPreTraining, pretrain)
    hf.load_state_dict(export_transformers_state_dict(pretrain), strict=True)
    video = torch.randn(2, 3, 4, 32, 32)
    masking = TubeMasking(pretrain.grid_size, 0.5)
    generator = torch.Generator().manual_seed(0)
    encoder_mask = torch.stack([masking(generator) for _ in range(2)])
    with torch.no_grad():
        ours = pretrain(video, encoder_mask)  # VideoMAE V1: every masked token reconstructed
        theirs = hf(video.transpose(1, 2), bool_masked_pos=encoder_mask).logits
    # transformers' decoder norm uses LayerNorm's default eps 1e-5, the reference 1e-6.
    torch.testing.assert_close(theirs, ours, rtol=1e-3, atol=1e-3)


def test_classifier_export_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = _randomise(create_classifier("vit_small_patch16_224", 7, **TINY))
    hf = _hf(transformers.VideoMAEForVideoClassification, model)
    hf.load_state_dict(export_transformers_state_dict(model), strict=True)
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        # transformers' fc_norm uses eps 1e-5, the reference 1e-6.
        torch.testing.assert_close(
            hf(video.transpose(1, 2)).logits, model(video), rtol=1e-3, atol=1e-3
        )


def test_import_inverts_the_export(pretrain: torch.nn.Module) -> None:
    classifier = _randomise(create_classifier("vit_small_patch16_224", 7, **TINY))
    for model in (pretrain, classifier):
        hf_state = export_transformers_state_dict(model)
        back = import_transformers_state_dict(hf_state)
        assert back.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            assert torch.equal(back[key], value), key


def test_import_reads_transformers_4_bias_names(pretrain: torch.nn.Module) -> None:
    legacy = {
        k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v
        for k, v in export_transformers_state_dict(pretrain).items()
    }
    assert "videomae.encoder.layer.0.attention.attention.q_bias" in legacy
    back = import_transformers_state_dict(legacy)
    assert back.keys() == pretrain.state_dict().keys()
    assert torch.equal(back["encoder.blocks.1.attn.v_bias"], pretrain.encoder.blocks[1].attn.v_bias)
    with pytest.raises(ValueError, match=r"videomae\.pooler"):
        import_transformers_state_dict({**legacy, "videomae.pooler.dense.weight": torch.zeros(1)})

"""The VideoMAE V2 trainer: model, masking, data, engine and checkpoints (issue 3)."""

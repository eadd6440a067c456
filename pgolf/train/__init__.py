"""Training: Muon + AdamW, schedules, EMA/SWA, checkpoints, torchrun (DESIGN.md §5)."""

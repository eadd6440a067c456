"""pgolf.eval.timing: the FLOP count behind the 8xH100 projection counts each block once per
application (depth recurrence repeats blocks), checked against the matrix multiplies
torch's FlopCounterMode sees in a real forward of a reduced record model; the projection
adds sequential steps x a per-step overhead and stays labelled an estimate.
Run: ``python -m pytest -q tests/test_timing.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pgolf.config import set_field
from pgolf.eval.timing import forward_flops_per_token, layer_applications, projection
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset


def _reduced_record():
    cfg = get_preset("record")
    for k, v in dict(model_dim=64, num_heads=4, num_kv_heads=2, vocab_size=512).items():
        set_field(cfg, f"model.{k}", v)
    return GPT(cfg.model).eval()


def _counted_mm_flops_per_token(model, t: int = 64) -> float:
    x = torch.randint(0, model.cfg.vocab_size, (1, t))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.forward_logits(x)
    return sum(v for k, v in fc.get_flop_counts()["Global"].items() if "mm" in str(k)) / t


@pytest.mark.parametrize("looping", [True, False])
def test_weight_flops_match_the_matmuls_of_a_real_forward(looping):
    model = _reduced_record()
    model.looping = looping
    counted = _counted_mm_flops_per_token(model)
    assert forward_flops_per_token(model, ctx=0) == pytest.approx(counted, rel=5e-3)


def test_depth_recurrence_counts_the_repeated_blocks():
    model = _reduced_record()
    runs = layer_applications(model)
    assert runs == [1, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1]  # record: layers 3-5 run 1 + 2 loops
    looped = forward_flops_per_token(model, 2048)
    model.looping = False
    assert layer_applications(model) == [1] * 11 and forward_flops_per_token(model, 2048) < looped


def test_projection_adds_measured_step_overhead_and_is_an_estimate():
    model = _reduced_record()
    base = projection(model, 64, forward_tokens=1000)
    more = projection(model, 64, forward_tokens=1000, steps=500, step_overhead_s=0.002)
    assert base["estimate"] is True and "assumed" in base["assumption"]
    assert more["projected_8xh100_s"] == pytest.approx(base["projected_8xh100_s"] + 1.0)
    assert more["sequential_steps"] == 500 and more["step_overhead_s"] == 0.002

"""Training log lines carry a time estimate (issue #22 item 8): the steps left at the recent
ms/step, or the wall-clock time left when the wall clock stops the run first."""

from pgolf.presets import get_preset
from pgolf.train.trainer import _format, eta_seconds


def _rec(step, ms, elapsed):
    return {"step": step, "train_loss": 3.0, "lr_scale": 1.0, "tokens_per_s": 1000.0, "ms_per_step": ms,
            "elapsed_s": elapsed}


def test_eta_from_steps_left():
    t = get_preset("tiny").train
    t.iterations, t.max_wallclock_seconds = 100, 0.0
    rec = _rec(10, 40.0, 0.4)
    assert eta_seconds(rec, t) == 90 * 0.040
    assert _format(rec, t).endswith(" eta 4s")


def test_eta_capped_by_the_wall_clock():
    t = get_preset("tiny").train
    t.iterations, t.max_wallclock_seconds = 10**6, 200.0
    assert eta_seconds(_rec(1000, 150.0, 150.0), t) == 50.0
    assert " eta 50s" in _format(_rec(1000, 150.0, 150.0), t)
    assert eta_seconds(_rec(1000, 150.0, 201.0), t) == 0.0  # past the cap: nothing left, never negative

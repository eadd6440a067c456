"""Learning-rate and momentum schedules (pure functions of step and elapsed time).

lr scale (multiplies every base lr): 1 until the warm-down, then linear to 0.
- By iterations: over the last ``warmdown_iters`` of ``iterations`` steps.
- With a wall-clock cap ``T``: the warm-down lasts ``warmdown_iters`` steps' worth of
  wall time, estimated from the measured mean step time ``elapsed/step``; the scale is
  ``remaining / warmdown_time`` and reaches 0 exactly at the cap (``warmdown_frac`` > 0
  fixes the warm-down time to that fraction of the cap instead). When the iteration
  limit would come first, the smaller of the two scales is used.

``min_lr`` floors the scale (the record keeps 0.1 of every lr at the end). Depth
recurrence switches on once :func:`progress` reaches ``model.enable_looping_at``.

Muon momentum warms up linearly from ``muon_momentum_warmup_start`` to
``muon_momentum`` over ``muon_momentum_warmup_steps``.

    s = lr_scale(step, elapsed_s, cfg.train)
"""

from __future__ import annotations


def lr_scale_iters(step: int, iterations: int, warmdown_iters: int) -> float:
    """Linear warm-down to 0 over the last ``warmdown_iters`` of ``iterations`` steps."""
    if warmdown_iters <= 0:
        return 1.0
    start = max(iterations - warmdown_iters, 0)
    if step < start:
        return 1.0
    return max(iterations - step, 0) / max(min(warmdown_iters, iterations), 1)


def lr_scale_wallclock(step: int, elapsed_s: float, cap_s: float, warmdown_iters: int, warmdown_frac: float = 0.0) -> float:
    """Warm-down over the last ``warmdown_iters`` mean step times before the cap, or over
    the last ``warmdown_frac`` of the cap when that is > 0."""
    remaining = max(cap_s - elapsed_s, 0.0)
    if warmdown_frac > 0:
        return min(1.0, remaining / (warmdown_frac * cap_s))
    if warmdown_iters <= 0:
        return 1.0 if remaining > 0 else 0.0
    warmdown_s = warmdown_iters * elapsed_s / max(step, 1)
    if step == 0 or warmdown_s <= 0:
        return 1.0 if remaining > 0 else 0.0
    return min(1.0, remaining / warmdown_s)


def lr_scale(step: int, elapsed_s: float, tcfg) -> float:
    """The lr scale for optimizer step ``step`` (0-based) after ``elapsed_s`` of training,
    never below the floor ``tcfg.min_lr`` (the record's 0.1; 0 = warm down to 0)."""
    s = lr_scale_iters(step, tcfg.iterations, tcfg.warmdown_iters)
    if tcfg.max_wallclock_seconds and tcfg.max_wallclock_seconds > 0:
        s = min(s, lr_scale_wallclock(step, elapsed_s, tcfg.max_wallclock_seconds, tcfg.warmdown_iters,
                                      tcfg.warmdown_frac))
    return max(s, tcfg.min_lr)


def progress(step: int, elapsed_s: float, tcfg) -> float:
    """Fraction of training done: the larger of steps/iterations and elapsed/cap."""
    frac = step / max(tcfg.iterations, 1)
    if tcfg.max_wallclock_seconds and tcfg.max_wallclock_seconds > 0:
        frac = max(frac, elapsed_s / tcfg.max_wallclock_seconds)
    return min(frac, 1.0)


def looping_on(step: int, elapsed_s: float, cfg) -> bool:
    """Whether depth recurrence runs at this step: ``model.num_loops`` > 0 and training has
    reached ``model.enable_looping_at``."""
    m = cfg.model
    return m.num_loops > 0 and progress(step, elapsed_s, cfg.train) >= m.enable_looping_at


def muon_momentum(step: int, tcfg) -> float:
    """Muon momentum at ``step``: linear warm-up, then constant."""
    n = tcfg.muon_momentum_warmup_steps
    if n <= 0 or step >= n:
        return tcfg.muon_momentum
    frac = step / n
    return (1 - frac) * tcfg.muon_momentum_warmup_start + frac * tcfg.muon_momentum


def should_stop(step: int, elapsed_s: float, tcfg) -> bool:
    """True when the iteration limit or the wall-clock cap has been reached."""
    if step >= tcfg.iterations:
        return True
    cap = tcfg.max_wallclock_seconds
    return bool(cap and cap > 0 and elapsed_s >= cap)

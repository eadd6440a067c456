"""Measured loss sensitivity of each matrix to turbo-rd's quantization, on calibration data.

For rate allocation, ``turbo-rd`` needs, per tensor, how much the loss grows per unit
step^2 of its grid. :func:`probe_sensitivity` measures it: with all other weights
float, the tensor alone is rounded to nearest on the rotated uniform grid at a probe
step (about ``PROBE_BITS`` bits of entropy per coordinate,
:func:`pgolf.quant.schemes.turbo_rd.qat_step`) and the mean loss on the same calibration
sequences is compared with the float loss: ``a_t = max(dL, floor) / step^2``. The
probe reads training data, so it is part of the reported calibration time. Example::

    sens = probe_sensitivity(model, seqs, cfg.quant)     # {weight name: a_t}
"""

from __future__ import annotations

import torch

PROBE_BITS = 3
FLOOR = 1e-3  # of the median positive increase: a noisy probe never makes a tensor free


@torch.no_grad()
def probe_sensitivity(model, seqs: torch.Tensor, qcfg, device="cpu") -> dict[str, float]:
    """``{name: loss increase per unit step^2}`` for every 2-D weight turbo-rd may quantize."""
    from pgolf.quant.schemes import turbo_rd

    model = model.to(device).eval()
    x, y = seqs[:, :-1].to(device), seqs[:, 1:].to(device)
    base = float(model(x, y))
    out = {}
    for name, p in model.named_parameters():
        if p.dim() != 2:
            continue
        w = p.detach().clone()
        step = turbo_rd.qat_step(PROBE_BITS, w.shape[1])
        rot = turbo_rd.rotation_of(qcfg, w.shape[1]).to(w.device)
        p.copy_(turbo_rd.round_trip(w, rot, step).to(p.dtype))
        out[name] = (float(model(x, y)) - base, step)
        p.copy_(w)
    pos = sorted(d for d, _ in out.values() if d > 0)
    floor = FLOOR * (pos[len(pos) // 2] if pos else 1.0)
    return {n: max(d, floor) / (s * s) for n, (d, s) in out.items()}

"""int8 / int6 per-row symmetric quantization against a naive reference."""

import pytest
import torch

from pgolf.quant.schemes import rowint


def _naive(w, bits, clip):
    qmax = 2 ** (bits - 1) - 1
    out_q, out_s = [], []
    for row in w.tolist():
        s = float(torch.tensor(clip * max(abs(v) for v in row) / qmax, dtype=torch.float16))
        q = [0 if s == 0 else max(-qmax, min(qmax, round(v / s))) for v in row]
        out_q.append(q)
        out_s.append(s)
    return torch.tensor(out_q), torch.tensor(out_s)


@pytest.mark.parametrize("bits,clip", [(8, 1.0), (6, 1.0), (6, 0.8), (4, 0.9)])
def test_matches_naive_reference(bits, clip):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(7, 33, generator=g).double().float()
    w[2] = 0
    q, s = rowint.quantize_rows(w, bits, clip)
    nq, ns = _naive(w, bits, clip)
    assert s.dtype == torch.float16 and q.dtype == torch.int8
    assert torch.equal(s.float(), ns.float())
    # round-half-even vs Python round agree (both banker's); compare exactly
    assert torch.equal(q.long(), nq.long())
    w_hat = rowint.dequantize_rows(q, s)
    assert torch.all(w_hat[2] == 0)
    if clip == 1.0:
        assert torch.all((w - w_hat).abs() <= s.float().unsqueeze(1) / 2 + 1e-6)


def test_roundtrip_rows_equals_encode_decode_and_levels():
    w = torch.randn(5, 40)
    q, s = rowint.quantize_rows(w, 6)
    ref = rowint.dequantize_rows(q, s)
    assert torch.equal(rowint.roundtrip_rows(w, torch.tensor(31.0)), ref)
    assert int(q.abs().max()) == 31
    assert rowint.qmax_of(8) == 127


def test_fake_quant_is_straight_through():
    w = torch.randn(3, 10, requires_grad=True)
    out = rowint.fake_quant_rows(w, 8)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_bad_parameters():
    with pytest.raises(ValueError):
        rowint.quantize_rows(torch.randn(2, 3), 9)
    with pytest.raises(ValueError):
        rowint.quantize_rows(torch.randn(2, 3), 8, clip=0.0)
    with pytest.raises(ValueError):
        rowint.quantize_rows(torch.randn(3), 8)

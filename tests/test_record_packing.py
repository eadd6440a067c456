"""The record's own LQER factor packing and small-tensor rules as ``--scheme record`` options.

``quant.lqer_packing=record``: A = U S at 2 bits with one symmetric scale for the whole
factor, B = V^T at 4 bits symmetric with a scale per 64 (issue #17, read from the record's
script); ``quant.small_tensors=record``: small 2-D matrices stay fp16, the attention gate
int8 per row. Both decode exactly; pgolf's packing and rules stay the defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.quant.format.artifact import build_artifact, decode
from pgolf.quant.calibrate.lqer import record_delta, record_factors


def rule_delta(err: torch.Tensor, rank: int) -> torch.Tensor:
    """The record's packing written from its description, in float64."""
    u, s, vh = torch.linalg.svd(err.double(), full_matrices=False)
    a, b = u[:, :rank] * s[:rank], vh[:rank]  # A = U S [rows, r], B = V^T [r, d]
    scale_a = (a.abs().max() / 1).half().double()  # 2 bits symmetric: -1, 0, 1
    a_hat = torch.clamp(torch.round(a / scale_a), -1, 1) * scale_a
    flat = b.reshape(-1, 64)  # 4 bits symmetric: -7..7, one scale per 64 (row-major)
    scale_b = (flat.abs().max(dim=1, keepdim=True).values / 7).half().double()
    b_hat = (torch.clamp(torch.round(flat / scale_b), -7, 7) * scale_b).reshape(b.shape)
    return a_hat @ b_hat


def test_record_lqer_packing_follows_its_rule():
    g = torch.Generator().manual_seed(0)
    err = torch.randn(96, 128, generator=g) * 0.01
    fac = record_factors(err, rank=4)
    qa, sa = fac["a"]
    qb, sb = fac["b"]
    assert set(np.unique(qa)) <= {-1, 0, 1} and sa.size == 1  # one scale for the whole of A
    assert qb.min() >= -7 and qb.max() <= 7 and sb.size == 4 * 128 // 64
    assert torch.allclose(record_delta(fac).double(), rule_delta(err, 4), atol=1e-6)


def _gated_model():
    from pgolf.model.gpt import GPT
    from pgolf.presets import get_preset

    cfg = get_preset("tiny")
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 2, 64, 4, 2
    m.bigram_buckets, m.bigram_dim, m.value_embed_dim, m.value_embed_layers, m.xsa_last_n = 64, 16, 16, (1,), 1
    m.sparse_attn_gate, m.gate_window = True, 12
    cfg.quant.fp16_max_numel, cfg.quant.scheme, cfg.quant.calib_batches = 1024, "record", 0
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return cfg, model.state_dict()


@pytest.mark.parametrize("packing,small", [("pgolf", "pgolf"), ("record", "record")])
def test_record_scheme_options_decode_exactly(packing, small):
    cfg, sd = _gated_model()
    cfg.quant.lqer_packing, cfg.quant.small_tensors = packing, small
    data, ref, rows = build_artifact(sd, cfg)
    out, _ = decode(data)
    assert all(torch.equal(out[k], ref[k]) for k in sd)
    kind = {r["name"]: r["kind"] for r in rows}
    gate, small_matrix = "blocks.0.attn.gate", "bigram.proj.weight"  # 4x12 and 64x16: under the size cut
    assert (kind[gate], kind[small_matrix]) == (("int8row", "fp16") if small == "record" else ("fp16", "int8row"))
    facts = {}
    _, _, fixed = build_artifact(sd, cfg, facts=facts)
    cfg.quant.lqer_rank = 0
    _, _, plain = build_artifact(sd, cfg)
    before, after = ({r["name"]: r["rel_mse"] for r in rs} for rs in (plain, fixed))
    assert len(facts["lqer"]) == cfg.quant.lqer_top_k
    assert all(after[n] < before[n] for n in facts["lqer"])  # the correction, in either packing, helps


def test_unknown_lqer_packing_in_an_artifact_is_refused():
    from pgolf.errors import ArtifactError
    from pgolf.quant.schemes import record

    entry = {"name": "w", "shape": [2, 2], "lqer_rank": 1, "lqer_packing": "bogus", "segments": {}}

    class Reader:
        def segment(self, ref):
            return {"codes": np.zeros(4, np.int8).tobytes(), "scales": np.ones(2, "<f2").tobytes()}[ref]

    entry["segments"] = {"codes": "codes", "scales": "scales"}
    with pytest.raises(ArtifactError, match="unknown LQER packing"):
        record.read(entry, Reader())


def test_nonsense_option_is_one_line_config_error():
    from pgolf.errors import ConfigError
    from pgolf.presets import resolve_config

    for key in ("quant.lqer_packing", "quant.small_tensors"):
        with pytest.raises(ConfigError, match="must be pgolf or record"):
            resolve_config("record", [f"{key}=bogus"])
    assert resolve_config("record", ["quant.lqer_packing=record", "quant.small_tensors=record"]).quant.scheme == "record"

"""Tests of pgolf.model.bpb: window plans, standard vs sliding equivalence, every target
scored once with the longest context, byte/loss bookkeeping, and 1- vs 2-process
(torchrun, gloo) agreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.data.tokenizer import ByteTables
from pgolf.model.bpb import evaluate, sliding_windows, standard_windows, val_stream
from pgolf.model.gpt import GPT

V = 64


def tiny_cfg() -> ModelConfig:
    return ModelConfig(vocab_size=V, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                       rope_dims=4, bigram_buckets=32, bigram_dim=8, value_embed_dim=8, value_embed_layers=(1,),
                       xsa_last_n=1)


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(tiny_cfg())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def fake_tables(seed: int = 0) -> ByteTables:
    rng = np.random.default_rng(seed)
    base = rng.integers(1, 5, V).astype(np.int32)
    space = rng.random(V) < 0.4
    boundary = np.zeros(V, dtype=bool)
    boundary[:4] = True
    base[:4], space[:4] = 0, False
    return ByteTables(base, space, boundary)


def stream_tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n).astype(np.uint16)


def test_val_stream_truncates_to_whole_windows():
    t = np.arange(100)
    assert len(val_stream(t, 16)) == 1 + 6 * 16
    assert len(val_stream(t, 99)) == 100
    with pytest.raises(Exception):
        val_stream(t, 100)


@pytest.mark.parametrize("n,seq,stride", [(64, 16, 16), (64, 16, 4), (64, 16, 5), (60, 16, 7), (16, 16, 3), (50, 10, 1)])
def test_sliding_plan_scores_every_target_once_with_longest_context(n, seq, stride):
    starts, score_from = sliding_windows(n, seq, stride)
    hits = np.zeros(n, dtype=int)
    context = np.zeros(n, dtype=int)
    for s, f in zip(starts, score_from):
        assert 0 <= s and s + seq <= n
        for j in range(s + f, s + seq):
            hits[j] += 1
            context[j] = j - s + 1
    assert np.all(hits == 1)
    grid = sorted(set(range(0, n - seq + 1, stride)) | {n - seq})
    for j in range(n):  # the longest context any grid window containing j gives
        best = max(j - s + 1 for s in grid if s <= j < s + seq)
        assert context[j] == best
        assert context[j] >= min(j + 1, seq - stride + 1)


def test_standard_plan():
    starts, score_from = standard_windows(48, 16)
    assert starts.tolist() == [0, 16, 32] and score_from.tolist() == [0, 0, 0]


def test_stride_equal_seq_len_is_standard():
    model, tables, toks = tiny_model(), fake_tables(), stream_tokens(16 * 9 + 5)
    std = evaluate(model, toks, tables, seq_len=16, batch_seqs=4, per_token=True, progress=False)
    sl = evaluate(model, toks, tables, seq_len=16, stride=16, batch_seqs=3, per_token=True, progress=False)
    assert std.tokens == sl.tokens == 16 * 9
    assert std.bytes == sl.bytes == tables.count_bytes(toks[: 16 * 9 + 1])
    assert abs(std.loss - sl.loss) <= 1e-12 * abs(std.loss)
    assert abs(std.bpb - sl.bpb) <= 1e-12 * abs(std.bpb)
    assert np.array_equal(std.per_token["logp"], sl.per_token["logp"])
    assert np.array_equal(std.per_token["entropy"], sl.per_token["entropy"])


def test_sliding_scores_each_target_with_its_longest_context():
    model, tables, toks = tiny_model(1), fake_tables(), stream_tokens(16 * 6 + 1, seed=3)
    seq, stride = 16, 5
    res = evaluate(model, toks, tables, seq_len=seq, stride=stride, batch_seqs=2, per_token=True, progress=False)
    stream = toks.astype(np.int64)
    n = len(stream) - 1
    pt = res.per_token
    assert res.tokens == n and len(pt["logp"]) == n and pt["logp"].dtype == np.float64
    assert pt["entropy"].dtype == np.float32 and pt["bytes"].dtype == np.int32
    assert int(pt["bytes"].sum()) == res.bytes == tables.count_bytes(stream)
    assert abs(-pt["logp"].sum() / n - res.loss) < 1e-12
    assert np.all(pt["logp"] < 0) and np.all(pt["entropy"] > 0)
    grid = sorted(set(range(0, n - seq + 1, stride)) | {n - seq})
    with torch.no_grad():
        for j in [0, 7, 15, 16, 20, 33, 50, n - 1]:  # brute force: earliest grid window holding j
            s = min(s for s in grid if s <= j < s + seq)
            logits = model.forward_logits(torch.from_numpy(stream[s : s + seq])[None])
            lp = torch.log_softmax(logits[0, j - s], -1)[stream[j + 1]].item()
            assert abs(lp - pt["logp"][j]) < 1e-5, j
    std = evaluate(model, toks, tables, seq_len=seq, per_token=True, progress=False)
    assert np.allclose(std.per_token["logp"][:seq], pt["logp"][:seq], atol=1e-6)  # first window identical


def test_bad_stride_is_a_clear_error():
    from pgolf.errors import PgolfError

    with pytest.raises(PgolfError, match="stride"):
        evaluate(tiny_model(), stream_tokens(100), fake_tables(), seq_len=16, stride=17, progress=False)


SCRIPT = """
import json, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_bpb import tiny_model, fake_tables, stream_tokens
from pgolf.model.bpb import evaluate
dist.init_process_group("gloo")
torch.set_num_threads(1)
model = tiny_model(2)
model.load_state_dict(torch.load({state!r}, weights_only=True))
toks, tables = stream_tokens(16 * 23 + 3, seed=5), fake_tables()
out = {{}}
for name, stride in (("standard", None), ("sliding", 5)):
    r = evaluate(model, toks, tables, seq_len=16, stride=stride, batch_seqs=3, per_token=True, progress=False)
    out[name] = dict(loss=r.loss, bpb=r.bpb, tokens=r.tokens, bytes=r.bytes,
                     logp=r.per_token["logp"].tolist(), entropy=r.per_token["entropy"].tolist())
ranks = [None] * dist.get_world_size()
dist.all_gather_object(ranks, out)
if dist.get_rank() == 0:
    assert all(r == out for r in ranks), "ranks disagree"
    json.dump(out, open({out!r}, "w"))
dist.destroy_process_group()
"""


def _torchrun(nproc: int, tmp_path: Path, state: Path) -> dict:
    out = tmp_path / f"out{nproc}.json"
    script = tmp_path / "run_eval.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), state=str(state), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _one_process() -> dict:
    """The reference: the same evaluations in this process, single-threaded like the workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, toks, tables = tiny_model(2), stream_tokens(16 * 23 + 3, seed=5), fake_tables()
        out = {}
        for name, stride in (("standard", None), ("sliding", 5)):
            r = evaluate(model, toks, tables, seq_len=16, stride=stride, batch_seqs=3, per_token=True, progress=False)
            out[name] = dict(loss=r.loss, bpb=r.bpb, tokens=r.tokens, bytes=r.bytes,
                             logp=r.per_token["logp"].tolist(), entropy=r.per_token["entropy"].tolist())
        return out
    finally:
        torch.set_num_threads(threads)


def test_two_processes_match_one(tmp_path):
    state = tmp_path / "model.pt"
    torch.save(tiny_model(2).state_dict(), state)
    one, two = _one_process(), _torchrun(2, tmp_path, state)
    for name in ("standard", "sliding"):
        a, b = one[name], two[name]
        assert a["tokens"] == b["tokens"] and a["bytes"] == b["bytes"]
        assert abs(a["loss"] - b["loss"]) <= 1e-9 * abs(a["loss"])
        assert abs(a["bpb"] - b["bpb"]) <= 1e-9 * abs(a["bpb"])
        assert a["logp"] == b["logp"] and a["entropy"] == b["entropy"]

"""Tests of score-first TTT (pgolf.eval.ttt) in pgolf eval: document-respecting training sequences,
torchrun (gloo, 2 processes) = 1 process, eval.json ttt/score blocks and the --per-token file,
--set errors, and model.doc_isolation (no previous-document token at a BOS position)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.eval.commands import run_eval
from pgolf.eval.stream import run_stream
from pgolf.eval.ttt import doc_sequences, make_method
from pgolf.eval.ttt_common import GlobalSGD
from test_eval_cli import run_dir  # noqa: F401  (fixture)
from test_stream import BOS, CHUNK, L, TTT, V, small_model
from test_stream import multi_doc_stream as _stream

# Global steps of 3 sequences (one gradient unit each in the torchrun tests): dealt 2 + 1 to two ranks.
DP_TTT = dataclasses.replace(TTT, global_chunk_tokens=3 * L)
CLI_SETS = ["ttt.lora_rank=2", "ttt.chunk_tokens=8", "ttt.phase_docs=3,6", "ttt.global_chunk_tokens=64"]


def test_doc_sequences_cover_each_target_once_and_never_cross_a_bos():
    tokens = np.random.default_rng(0).integers(2, 50, 60)
    tokens[[0, 7, 30, 31, 45]] = BOS
    seqs = doc_sequences(tokens, 3, 52, seq_len=8, bos_id=BOS)
    assert all(len(s) <= 9 and BOS not in s[1:] for s in seqs)
    # Recover each piece's position in the stream to list its targets.
    covered = []
    for s in seqs:
        for start in range(len(tokens)):
            if np.array_equal(tokens[start: start + len(s)], s) and start + 1 >= 3:
                covered += list(range(start + 1, start + len(s)))
                break
    assert sorted(covered) == [t for t in range(3, 52) if tokens[t] != BOS]


SCRIPT = """
import json, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_stream import BOS, CHUNK, L, V, multi_doc_stream as _stream, small_model
from test_ttt import DP_TTT as TTT
from pgolf.eval.stream import run_stream
from pgolf.eval.ttt import make_method
from pgolf.eval.ttt_common import GlobalSGD
GlobalSGD.unit_seqs = 1
dist.init_process_group("gloo")
torch.set_num_threads(1)
out = {{}}
for mode in ("lora", "global", "phased"):
    r = run_stream(make_method(mode, small_model(), TTT, L, BOS), _stream(), V, seq_len=L, chunk=CHUNK, bos_id=BOS)
    out[mode] = r.logp.tolist()
if dist.get_rank() == 0:
    with open({out!r}, "w") as f:
        json.dump(out, f)
dist.barrier()  # no rank tears gloo down while another still works (as pgolf.train.distributed.teardown)
dist.destroy_process_group()
# Skip the interpreter's finalization: once in ~10 runs on a loaded CPU, a gloo thread still
# joinable at exit aborted rank 1 ("terminate called without an active exception") after
# the scores were written; what this test checks is the scores, not gloo's teardown.
import os
os._exit(0)
"""


@pytest.mark.slow  # the reference path; the batched one: tests/test_ttt_docs.py (default suite)
def test_torchrun_two_processes_match_one(tmp_path, monkeypatch):
    out = tmp_path / "two.json"
    script = tmp_path / "ttt2.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[:1500] + "\n...\n" + proc.stderr[-3000:]
    two = json.loads(out.read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(GlobalSGD, "unit_seqs", 1)
    try:
        for mode in ("lora", "global", "phased"):  # global / phase SGD: data-parallel over the 2 ranks
            one = run_stream(make_method(mode, small_model(), DP_TTT, L, BOS), _stream(), V, seq_len=L, chunk=CHUNK,
                             bos_id=BOS).logp
            assert np.allclose(one, two[mode], rtol=0, atol=1e-6), (mode, np.max(np.abs(one - np.array(two[mode]))))
    finally:
        torch.set_num_threads(threads)


def test_eval_json_ttt_score_and_per_token_file(run_dir, tmp_path):  # noqa: F811
    nll = tmp_path / "nll.npy"
    res = run_eval(run_dir, stride=8, ngram="causal", orders=(2, 4), ttt="phased", per_token=nll, sets=CLI_SETS,
                   out=tmp_path / "e.json", progress=False, echo=False)
    tt, sc = res["ttt"], res["score"]
    assert tt["mode"] == "phased" and tt["valid"] is True and np.isfinite(tt["val_bpb"]) and tt["causality_probes"] > 0
    assert tt["ngram"]["valid"] is True and tt["ngram"]["audited_positions"] > 0
    assert sc["method"] == "ttt-phased+ngram-causal" and sc["val_bpb"] == tt["ngram"]["val_bpb"]
    arr = np.load(nll)
    assert arr.dtype == np.float64 and arr.shape == (res["tokens"],)
    assert abs(arr.sum() / math.log(2) / res["bytes"] - sc["val_bpb"]) <= 1e-9
    assert {"ttt_s", "ttt_ngram_s", "sliding_s"} <= set(res["timings"])
    assert tt["budget"]["estimate"] is True and tt["budget"]["projected_8xh100_s"] > 0


@pytest.mark.parametrize("stride,ngram,ttt,method", [
    (8, "none", "none", "sliding"), (0, "none", "none", "standard"), (8, "causal", "none", "sliding+ngram-causal"),
    (8, "two-pass", "none", "sliding"), (8, "none", "lora", "ttt-lora"), (8, "none", "global", "ttt-global"),
])
def test_headline_is_the_most_complete_legal_method(run_dir, tmp_path, stride, ngram, ttt, method):  # noqa: F811
    nll = tmp_path / "nll.npy"
    res = run_eval(run_dir, stride=stride, ngram=ngram, orders=(2, 4), ttt=ttt, per_token=nll, sets=CLI_SETS,
                   out=tmp_path / "e.json", progress=False, echo=False)
    assert res["score"]["method"] == method
    assert abs(np.load(nll).sum() / math.log(2) / res["bytes"] - res["score"]["val_bpb"]) <= 1e-9


def test_cli_ttt_table_and_set_errors(run_dir, tmp_path, capsys):  # noqa: F811
    args = ["eval", str(run_dir), "--stride", "8", "--ngram", "none", "--ttt", "lora", "--out", str(tmp_path / "x.json"),
            "--quiet"] + [a for s in CLI_SETS for a in ("--set", s)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ttt lora" in out and "score (ttt-lora)" in out
    assert main(["eval", str(run_dir), "--set", "model.num_layers=3", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "only eval.* and ttt.*" in err and "\n" not in err
    assert main(["eval", str(run_dir), "--ttt", "lora", "--set", "ttt.lora_targets=q,zz", "--quiet"]) == 1
    assert "lora_targets" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--ttt", "phased", "--set", "ttt.phase_docs=5,2", "--quiet"]) == 1
    assert "phase_docs" in capsys.readouterr().err


def test_doc_isolation_masks_the_previous_document_at_bos():
    from pgolf.model.layers import BigramHash, SmearGate

    torch.manual_seed(0)
    x = torch.randn(1, 6, 8)
    idx = torch.tensor([[5, 6, BOS, 7, 8, 9]])
    bos = idx == BOS
    smear = SmearGate(8)
    with torch.no_grad():
        smear.gate.fill_(1.0)
    plain, iso = smear(x), smear(x, bos)
    g = torch.sigmoid(torch.tensor(1.0))
    assert torch.allclose(iso[0, 2], (1 - g) * x[0, 2])  # no term from position 1
    assert torch.equal(iso[0, 3:], plain[0, 3:]) and not torch.allclose(iso[0, 2], plain[0, 2])
    big = BigramHash(16, 4, 8, 1.0)
    torch.nn.init.normal_(big.table.weight)
    a = big(idx, bos)
    b = big(torch.tensor([[5, 3, BOS, 7, 8, 9]]), bos)  # another previous-document token before BOS
    assert torch.equal(a[0, 2], b[0, 2]) and torch.equal(a[0, 2], a[0, 0])


def test_doc_isolation_flag_changes_only_bos_inputs():
    from pgolf.config import ModelConfig
    from pgolf.model.gpt import GPT

    cfg = dict(vocab_size=V, num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1, rope_dims=4, bigram_buckets=16,
               bigram_dim=4, value_embed_dim=0, xsa_last_n=0)
    torch.manual_seed(0)
    off = GPT(ModelConfig(**cfg))
    on = GPT(ModelConfig(**cfg, doc_isolation=True))
    on.load_state_dict(off.state_dict())
    with torch.no_grad():
        off.smear.gate.fill_(2.0), on.smear.gate.fill_(2.0)
        off.bigram.table.weight.normal_(), on.bigram.table.weight.copy_(off.bigram.table.weight)
    no_bos = torch.tensor([[4, 5, 6, 7, 8, 9]])
    assert torch.equal(off.forward_logits(no_bos), on.forward_logits(no_bos))
    with_bos = torch.tensor([[4, 5, BOS, 7, 8, 9]])
    a, b = off.forward_logits(with_bos), on.forward_logits(with_bos)
    assert torch.equal(a[0, :2], b[0, :2]) and not torch.allclose(a[0, 2], b[0, 2])

"""Document-batched LoRA TTT (pgolf.eval.ttt_docs) against a one-document reference written
here with the per-document LoRA of pgolf.eval.ttt (weights swapped by functional_call, one
document at a time): per-token scores agree within 1e-5 in fp32 on CPU; each document's
scores depend only on its own earlier tokens; batches are longest first.
Run: ``python -m pytest -q tests/test_ttt_docs.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf.eval.reveal import RevealedView
from pgolf.eval.stream import units_of
from pgolf.eval.ttt import LoraTTT
from pgolf.eval.ttt_docs import BatchedLora, doc_batches, run_documents
from test_stream import BOS, TTT, V, small_model

L, CHUNK = 16, 4


def docs_stream(seed: int = 11, lengths=(23, 5, 14, 9, 31, 2, 14, 18)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [np.concatenate(([BOS], rng.integers(2, V, n))) for n in lengths]
    return np.concatenate(parts).astype(np.int64)


def reference_scores(stream) -> np.ndarray:
    """One document at a time: chunk k scored on the document's own window, then one AdamW step."""
    model = small_model()
    lora = LoraTTT(model, TTT, seq_len=L, bos_id=BOS)
    logp = np.zeros(len(stream) - 1)
    for s, e in units_of(stream, BOS):
        lora.begin_unit(RevealedView(stream, s))
        for a in range(s, e, CHUNK):
            b = min(a + CHUNK, e)
            lo = max(s - 1, a + CHUNK - 1 - L)
            x = torch.from_numpy(stream[lo: b - 1])[None]
            out = lora._forward(x)[0, a - 1 - lo:]
            tgt = torch.from_numpy(stream[a:b])
            logp[a - 1: b - 1] = torch.log_softmax(out.detach(), -1).gather(-1, tgt[:, None]).squeeze(-1).double()
            loss = F.cross_entropy(out.float(), tgt)
            lora.opt.zero_grad(set_to_none=True)
            loss.backward()
            lora.opt.step()
    return logp


def batched(stream, doc_batch, **kw):
    method = BatchedLora(small_model(), TTT, seq_len=L, bos_id=BOS)
    return run_documents(method, stream, V, L, CHUNK, doc_batch=doc_batch, bos_id=BOS, **kw)


@pytest.mark.parametrize("doc_batch", [1, 3, 8])
def test_batched_scores_match_the_one_document_reference(doc_batch):
    stream = docs_stream()
    ref = reference_scores(stream)
    res = batched(stream, doc_batch, probe_every=1)
    assert np.all(res.logp < 0) and res.probes == res.chunks > 0
    assert np.max(np.abs(res.logp - ref)) < 1e-5


def test_lora_changes_scores_after_the_first_chunk_of_a_document():
    stream = docs_stream()
    frozen = run_documents(BatchedLora(small_model(), TTT.__class__(**{**TTT.__dict__, "lora_lr": 1e-12}), L, BOS),
                           stream, V, L, CHUNK, doc_batch=8, bos_id=BOS)
    res = batched(stream, 8)
    s, e = units_of(stream, BOS)[0]
    assert np.allclose(res.logp[s - 1: s - 1 + CHUNK], frozen.logp[s - 1: s - 1 + CHUNK], atol=1e-6)
    assert not np.allclose(res.logp[s - 1 + CHUNK: e - 1], frozen.logp[s - 1 + CHUNK: e - 1], atol=1e-4)


def test_each_documents_scores_ignore_other_documents_and_its_own_future():
    stream = docs_stream()
    base = batched(stream, 8).logp
    units = units_of(stream, BOS)
    s, e = units[2]
    p = s + 6  # mid-document, mid-chunk
    other = stream.copy()
    rng = np.random.default_rng(0)
    other[p + 1: e - 1] = rng.integers(2, V, e - 2 - p)  # this document's future (its closing BOS kept)
    a, b = units[4]
    other[a: b - 1] = rng.integers(2, V, b - 1 - a)  # and another document entirely
    res = batched(other, 8).logp
    assert np.array_equal(res[: p], base[: p])  # bit for bit
    assert np.array_equal(res[units[0][0] - 1: units[0][1] - 1], base[units[0][0] - 1: units[0][1] - 1])


def test_batches_are_longest_first_in_stream_order_ties():
    units = [(1, 5), (5, 20), (20, 24), (24, 30)]
    assert doc_batches(units, 0, 4, 2) == [[1, 3], [0, 2]]
    assert doc_batches(units, 2, 4, 64) == [[3, 2]]


def test_phased_runs_the_global_epoch_between_phases():
    stream = docs_stream()
    method = BatchedLora(small_model(), TTT, seq_len=L, bos_id=BOS, phased=True)
    res = run_documents(method, stream, V, L, CHUNK, doc_batch=8, phase_docs=(3, 6), bos_id=BOS)
    plain = batched(stream, 8)
    n3 = units_of(stream, BOS)[3][0] - 1
    assert method.global_tokens > 0
    assert np.max(np.abs(res.logp[:n3] - plain.logp[:n3])) < 1e-6  # before the first phase ends: the same
    assert not np.allclose(res.logp[n3:], plain.logp[n3:])
    assert math.isfinite(float(res.logp.sum()))


TORCHRUN = """
import json, os, sys
import torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_ttt_docs import BOS, CHUNK, L, V, docs_stream, small_model
from test_ttt import DP_TTT as TTT
from pgolf.eval.isolate import spawn_method
from pgolf.eval.ttt_docs import BatchedLora, run_documents
from pgolf.eval.ttt_common import GlobalSGD
GlobalSGD.unit_seqs = 1  # at import: each method's own process imports this script as its main module


def main():
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    out = {{}}
    for phased in (False, True):
        kw = dict(doc_batch=2, phase_docs=(3, 6) if phased else (), bos_id=BOS)
        m = BatchedLora(small_model(), TTT, seq_len=L, bos_id=BOS, phased=phased)
        out[str(phased)] = run_documents(m, docs_stream(), V, L, CHUNK, **kw).logp.tolist()
        with spawn_method(BatchedLora, (small_model(), TTT, L, BOS), {{"phased": phased}}, "cpu") as m:
            out["isolated " + str(phased)] = run_documents(m, docs_stream(), V, L, CHUNK, **kw).logp.tolist()
    if dist.get_rank() == 0:
        json.dump(out, open({out!r}, "w"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # as tests/test_ttt.py: gloo's teardown at interpreter exit is not what is tested


if __name__ == "__main__":
    main()
"""


def test_torchrun_two_processes_match_one(tmp_path, monkeypatch):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pgolf.eval.ttt_common import GlobalSGD
    from test_ttt import DP_TTT

    out, script = tmp_path / "two.json", tmp_path / "docs2.py"
    script.write_text(TORCHRUN.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(GlobalSGD, "unit_seqs", 1)
    try:
        for phased in (False, True):
            m = BatchedLora(small_model(), DP_TTT, seq_len=L, bos_id=BOS, phased=phased)
            one = run_documents(m, docs_stream(), V, L, CHUNK, doc_batch=2, phase_docs=(3, 6) if phased else (),
                                bos_id=BOS).logp
            for key in (str(phased), f"isolated {phased}"):  # methods in the driver's process, and in their own
                diff = float(np.max(np.abs(one - np.array(two[key]))))
                assert diff <= 1e-6, (key, diff)
    finally:
        torch.set_num_threads(threads)


def test_the_global_epoch_between_phases_trains_the_base_model_without_lora():
    stream = docs_stream()
    method = BatchedLora(small_model(), TTT, seq_len=L, bos_id=BOS, phased=True)
    ref = small_model()
    from pgolf.eval.ttt_common import GlobalSGD

    sgd = GlobalSGD(ref, TTT, L, BOS, False)
    method.start([1, 2, 3])  # factors of 3 documents; the epoch runs wider batches
    with method.hooks():
        method.end_phase(RevealedView(stream, 60))
    sgd.train(stream[:60], 1, 60)
    for a, b in zip(method.model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_the_lora_step_is_one_multi_tensor_adamw():
    method = BatchedLora(small_model(), TTT, seq_len=L, bos_id=BOS)
    method.start([1, 2])
    assert isinstance(method.opt, torch.optim.AdamW) and method.opt.defaults["foreach"] is True  # CPU: foreach

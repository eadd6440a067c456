"""The generated train_gpt.py scores bpb as pgolf does: on a CaseOps dataset (per-token byte
files beside the shards) it counts the original text's UTF-8 bytes, not the tokenizer's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pgolf.submit import bundle
from tests.test_record_train import caseops_data, small_record_sets  # noqa: F401 (fixture)


def test_generated_script_counts_bytes_from_the_byte_files(caseops_data, tmp_path):  # noqa: F811
    from pgolf.data.loader import load_val_tokens
    from pgolf.data.tokenizer import byte_tables
    from pgolf.model.bpb import evaluate
    from pgolf.eval.loading import load_for_eval
    from pgolf.presets import resolve_config

    data, docs = caseops_data
    argv = small_record_sets(iterations=2, warmdown_iters=2, **{"eval.stride": 0})
    cfg = resolve_config("record", sets=[argv[i + 1] for i in range(0, len(argv), 2)]).to_dict()
    script = tmp_path / "train_gpt.py"
    bundle.write_script(script, cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "PGOLF_FAULT")}
    env.update(PGOLF_BUNDLE_DIR=str(tmp_path / "unpacked"), DATA_PATH=str(data),
               TOKENIZER_PATH=str(data / "tokenizer.model"), RUN_ID="t", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "t"
    ev = json.loads((run / "eval.json").read_text())
    assert ev["bytes"] == sum(len(d.encode("utf-8")) for d in docs[:30])  # the original documents' bytes
    printed = float(re.match(r"^val_loss:[0-9.]+ val_bpb:([0-9.]+) \(standard\)$", r.stdout.strip().splitlines()[-1])[1])
    # the installed package scores the same decoded artifact with the same bytes ...
    loaded = load_for_eval(run / "artifact.pgz", artifact=True)
    tokens = load_val_tokens(data, 64)
    tables = byte_tables(data / "tokenizer.model")
    counts = np.fromfile(data / "fineweb_val_bytes_000000.bin", dtype="<u2", offset=1024)
    ours = evaluate(loaded.model, tokens, tables, seq_len=64, token_bytes=counts)
    assert printed == pytest.approx(ours.bpb, rel=1e-6)
    # ... which is not what the tokenizer's byte tables would give on CaseOps pieces
    by_tables = evaluate(loaded.model, tokens, tables, seq_len=64)
    assert abs(by_tables.bpb - printed) > 1e-3 * printed

"""Tests for the report: numbers copied exactly from each seed's files, valid PNGs, Welch vs baseline.

Run directories here are written by the test itself (fake stage outputs in the documented
formats), so the report is tested independently of training.
"""

import json
import random
import re

import pytest

from pgolf.pipeline.report import fmt, write_report
from pgolf.pipeline.results import collect_run, score

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def write_fake_seed(d, seed, rng, ngram_mode="causal", shift=0.0):
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"preset": "tiny", "model": {"num_layers": 4, "model_dim": 192},
                                               "train": {"seed": seed}, "quant": {}, "eval": {}}))
    pre = 1.9 + shift + rng.uniform(-0.01, 0.01)
    (d / "train_summary.json").write_text(json.dumps(
        {"val_loss": pre * 0.7, "val_bpb": pre, "steps": 100 + seed, "train_time_s": 12.5}))
    rows = [{"step": s, "train_loss": 6 - s / 40 + rng.random() * 0.1, "lr_scale": 1.0, "tokens_per_s": 1e4,
             "ms_per_step": 80.0, "elapsed_s": s * 0.08} for s in range(0, 101, 10)]
    rows[-1].update(val_loss=pre * 0.7, val_bpb=pre)
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 10")  # torn last line
    tensors = [{"name": f"blocks.{i}.mlp.up", "role": "mlp_up", "bits": 2, "numel": 4096, "rel_mse": 0.11,
                "bytes": 1100} for i in range(2)]
    tensors += [{"name": "tok_emb", "role": "embed", "bits": 4, "numel": 8192, "rel_mse": 0.009, "bytes": 4200},
                {"name": "scale", "role": "control", "bits": 32, "numel": 4, "rel_mse": 0.0, "bytes": 16}]
    (d / "quant.json").write_text(json.dumps({
        "scheme": "turbo", "tensors": tensors, "artifact_bytes": 6000 + seed, "code_bytes": 90000,
        "code_files": ["pgolf/model/gpt.py"], "total_bytes": 96000 + seed, "bits_per_param": 2.9,
        "budget_bytes": 16_000_000, "within_budget": True}))
    post = pre + 0.05 + rng.uniform(0, 0.01)
    ngram = {"mode": ngram_mode, "valid": ngram_mode == "causal", "val_loss": (post - 0.03) * 0.7,
             "val_bpb": post - (0.03 if ngram_mode == "causal" else 1.2), "orders": [2, 12]}
    (d / "eval.json").write_text(json.dumps({
        "tokens": 1000, "bytes": 2400,
        "neural": {"standard": {"val_loss": post * 0.7, "val_bpb": post},
                   "sliding": {"val_loss": (post - 0.01) * 0.7, "val_bpb": post - 0.01, "stride": 64}},
        "ngram": ngram, "timings": {}}))


def make_run(root, seeds, **kw):
    rng = random.Random(sum(seeds) + len(str(root)))
    for s in seeds:
        write_fake_seed(root / f"seed_{s}", s, rng, **kw)
    return root


def check_png(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIG and len(data) > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # not a blank canvas


def test_report_numbers_equal_eval_json_and_pngs_valid(tmp_path):
    run = make_run(tmp_path / "run", [1, 2, 3])
    md_path = write_report(run)
    md = md_path.read_text()
    for name in ("loss_curves.png", "bpb_stages.png", "quant_roles.png"):
        check_png(run / name)
        assert f"]({name})" in md
    # the per-seed table quotes each seed's files exactly (to the printed precision)
    table = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(table) == 3
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        seed = int(cells[0])
        ev = json.loads((run / f"seed_{seed}" / "eval.json").read_text())
        ts = json.loads((run / f"seed_{seed}" / "train_summary.json").read_text())
        q = json.loads((run / f"seed_{seed}" / "quant.json").read_text())
        assert float(cells[3]) == round(ts["val_bpb"], 6)
        assert float(cells[4]) == round(ev["neural"]["standard"]["val_bpb"], 6)
        assert float(cells[5]) == round(ev["neural"]["sliding"]["val_bpb"], 6)
        assert float(cells[6]) == round(ev["ngram"]["val_bpb"], 6)
        assert int(cells[8].replace(",", "")) == q["artifact_bytes"]
    # report.json carries the exact values
    rep = json.loads((run / "report.json").read_text())
    for s in rep["seeds"]:
        ev = json.loads((run / f"seed_{s['seed']}" / "eval.json").read_text())
        assert s["sliding_bpb"] == ev["neural"]["sliding"]["val_bpb"]
        assert s["ngram_bpb"] == ev["ngram"]["val_bpb"] == s["score_bpb"]
    # mean ± std section
    vals = [s["ngram_bpb"] for s in rep["seeds"]]
    assert rep["summary"]["ngram_bpb"]["mean"] == pytest.approx(sum(vals) / 3)
    assert "Mean ± std" in md and fmt(rep["summary"]["ngram_bpb"]["mean"]) in md


def test_single_seed_run_dir_and_missing_stages(tmp_path):
    run = tmp_path / "one"
    write_fake_seed(run, 7, random.Random(0))
    (run / "eval.json").unlink()
    md = write_report(run).read_text()
    assert "| 7 |" in md and "Mean ± std" not in md
    rec = collect_run(run)[0]
    assert rec["post_quant_bpb"] is None and rec["score_bpb"] is None


def test_leaky_ngram_is_labelled_and_never_the_score(tmp_path):
    run = make_run(tmp_path / "leaky", [1, 2], ngram_mode="two-pass")
    md = write_report(run).read_text()
    assert "leaky (not a valid compression rate)" in md
    for rec in collect_run(run):
        assert rec["leaky_bpb"] is not None and rec["ngram_bpb"] is None
        assert rec["score_source"] == "sliding" and rec["score_bpb"] == rec["sliding_bpb"]
        assert score(rec, "ngram") == (None, None, None)
    check_png(run / "bpb_stages.png")


def test_welch_against_baseline(tmp_path):
    base = make_run(tmp_path / "base", [1, 2, 3])
    better = make_run(tmp_path / "better", [1, 2, 3], shift=-0.1)
    write_report(better, baseline=base)
    rep = json.loads((better / "report.json").read_text())
    b = rep["baseline"]
    assert b["loss_diff"] < -0.05 and b["p_one_sided"] < 0.01 and b["meets_challenge_bar"] is True
    write_report(base, baseline=better)
    rep = json.loads((base / "report.json").read_text())
    assert rep["baseline"]["p_one_sided"] > 0.99 and rep["baseline"]["meets_challenge_bar"] is False
    assert "Against baseline" in (base / "report.md").read_text()


def test_ttt_headline_is_the_score_when_evaluated(tmp_path):
    """A seed whose eval.json headline is a score-first TTT method is scored by it (auto); the
    n-gram and sliding numbers stay selectable, and runs without TTT keep the n-gram score."""
    from pgolf.submit.records import pick_scores

    run = make_run(tmp_path / "ttt", [1, 2])
    for i, d in enumerate(sorted(run.iterdir())):
        ev = json.loads((d / "eval.json").read_text())
        ev["ttt"] = {"mode": "phased", "valid": True, "val_loss": 0.9, "val_bpb": 1.3 + i / 100}
        ev["score"] = {"method": "ttt-phased+ngram-causal", "val_loss": 0.8, "val_bpb": 1.2 + i / 100}
        (d / "eval.json").write_text(json.dumps(ev))
    recs = collect_run(run)
    for i, rec in enumerate(recs):
        assert rec["score_source"] == "score-first TTT (ttt-phased+ngram-causal)"
        assert rec["score_bpb"] == rec["ttt_bpb"] == 1.2 + i / 100 and rec["score_loss"] == 0.8
        assert score(rec, "ngram")[1] == rec["ngram_bpb"] != rec["score_bpb"]
    assert [s[1] for s in pick_scores(recs)] == [1.2, 1.21]
    assert [s[1] for s in pick_scores(recs, "ngram")] == [r["ngram_bpb"] for r in recs]
    assert "score-first TTT val_bpb" in write_report(run).read_text()
    plain = collect_run(make_run(tmp_path / "plain", [1]))[0]
    assert plain["ttt_bpb"] is None and plain["score_source"] == "causal n-gram"

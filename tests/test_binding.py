"""Results bound to the artifact they measured (issue #22, item 2): eval.json records the
artifact's sha256, size and model fingerprint; report/submit refuse a stale or foreign
artifact with one line saying what to rerun; ``pgolf run`` re-quantizes and re-evaluates
when the artifact on disk is not the run's; ``eval RUN --artifact`` refuses another model."""

import hashlib
import json
import shutil

import torch

from pgolf.cli import main
from pgolf.config import RunConfig, set_field
from pgolf.model.gpt import GPT
from pgolf.submit.budget import run_code_bytes
from test_eval_cli import run_dir, tiny_run_config  # noqa: F401  (the fixture)

EVAL = ["--quiet", "--stride", "0", "--ngram", "none", "--ttt", "none"]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_run(src, dst):
    shutil.copytree(src, dst)
    (dst / "train_summary.json").write_text(json.dumps({"val_loss": 1.0, "val_bpb": 2.0, "steps": 1,
                                                        "train_time_s": 1.0}))
    return dst


def foreign_artifact(run, tmp_path):
    """An artifact of another model (one layer more) trained on the same data, with its quant.json."""
    other = tmp_path / "other"
    other.mkdir()
    d = json.loads((run / "config.json").read_text())
    d["model"]["num_layers"] = 3
    (other / "config.json").write_text(json.dumps(d))
    torch.save(GPT(RunConfig.from_dict(d).model).state_dict(), other / "model.pt")
    assert main(["quantize", str(other)]) == 0
    return other


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("pgolf: error")]


def submit(run, out):
    return main(["submit", str(run), "--out", str(out), "--name", "n", "--author", "a", "--github-id", "a"])


def test_eval_json_is_bound_and_a_requantized_artifact_is_refused(run_dir, tmp_path, capsys):  # noqa: F811
    run = copy_run(run_dir, tmp_path / "run")
    assert main(["quantize", str(run)]) == 0
    assert main(["eval", str(run), "--artifact", *EVAL]) == 0
    ev = json.loads((run / "eval.json").read_text())
    art = run / "artifact.pgz"
    assert ev["artifact_sha256"] == sha(art) and ev["artifact_bytes"] == art.stat().st_size
    model = json.loads((run / "config.json").read_text())["model"]
    assert len(ev["model_fingerprint"]) == 16
    assert json.loads((run / "quant.json").read_text())["artifact_sha256"] == sha(art)
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    # re-quantized with int8 and not re-evaluated: eval.json's number is turbo's
    assert main(["quantize", str(run), "--scheme", "int8"]) == 0
    for argv in (["report", str(run)], None):
        rc = main(argv) if argv else submit(run, tmp_path / "rec")
        err = errors(capsys)
        assert rc == 1 and len(err) == 1 and "measured another artifact" in err[0], err
        assert f"rerun: pgolf eval {run} --artifact" in err[0]
    assert not (tmp_path / "rec").exists()  # nothing half-written
    # a model.pt evaluation is not the artifact's either
    assert main(["eval", str(run), *EVAL]) == 0
    assert main(["report", str(run)]) == 1 and "measured model.pt" in errors(capsys)[0]
    assert main(["eval", str(run), "--artifact", *EVAL]) == 0 and main(["report", str(run)]) == 0
    assert model == json.loads((run / "config.json").read_text())["model"]


def test_a_foreign_artifact_is_refused_by_report_submit_and_eval(run_dir, tmp_path, capsys):  # noqa: F811
    run = copy_run(run_dir, tmp_path / "run")
    assert main(["quantize", str(run)]) == 0
    assert main(["eval", str(run), "--artifact", *EVAL]) == 0
    other = foreign_artifact(run, tmp_path)
    shutil.copy(other / "artifact.pgz", run / "artifact.pgz")  # the quant.json stays the run's
    capsys.readouterr()
    for argv in (["report", str(run)], None):
        rc = main(argv) if argv else submit(run, tmp_path / "rec")
        err = errors(capsys)
        assert rc == 1 and len(err) == 1 and "is not the artifact quant.json describes" in err[0], err
        assert f"rerun: pgolf quantize {run}" in err[0]
    shutil.copy(other / "quant.json", run / "quant.json")  # both files copied: the model still differs
    assert main(["report", str(run)]) == 1
    err = errors(capsys)
    assert "holds another model" in err[0] and "num_layers 3 vs 2" in err[0], err
    assert main(["eval", str(run), "--artifact", *EVAL]) == 1
    err = errors(capsys)
    assert len(err) == 1 and "its model is not the one in" in err[0] and "num_layers 3 vs 2" in err[0], err


def test_pgolf_run_requantizes_and_reevaluates_a_foreign_artifact(run_dir, tmp_path, capsys):  # noqa: F811
    from pgolf.pipeline.run import run_seed

    run = copy_run(run_dir, tmp_path / "run")
    d = json.loads((run / "config.json").read_text())
    cfg = RunConfig.from_dict(d)
    for key, value in (("eval.stride", 0), ("eval.ngram", "none"), ("ttt.mode", "none")):
        set_field(cfg, key, value)
    assert run_seed(cfg, d["data_dir"], d["tokenizer"], run, count_code=run_code_bytes) == {"train": False, "quantize": True, "eval": True}
    own = sha(run / "artifact.pgz")
    assert run_seed(cfg, d["data_dir"], d["tokenizer"], run, count_code=run_code_bytes) == {"train": False, "quantize": False, "eval": False}
    other = foreign_artifact(run, tmp_path)
    for name in ("artifact.pgz", "quant.json"):  # copied in together, newer than model.pt
        shutil.copy(other / name, run / name)
    assert run_seed(cfg, d["data_dir"], d["tokenizer"], run, count_code=run_code_bytes) == {"train": False, "quantize": True, "eval": True}
    assert sha(run / "artifact.pgz") == own
    assert json.loads((run / "eval.json").read_text())["artifact_sha256"] == own

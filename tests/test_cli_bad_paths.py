"""Every command given a wrong folder (empty, missing, a file) answers one line on stderr and exit 1.

Tried as a new user would: ``pgolf report`` on a folder with no run used to write an empty
report and exit 0; ``--out`` naming an existing file used to end in a traceback.
"""

from pathlib import Path

import pytest

from pgolf.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CASES = {
    "report empty": ["report", "{empty}"],
    "report missing": ["report", "{missing}"],
    "report file": ["report", "{file}"],
    "quantize empty": ["quantize", "{empty}"],
    "quantize missing": ["quantize", "{missing}"],
    "quantize file": ["quantize", "{file}"],
    "quantize --inspect folder": ["quantize", "--inspect", "{empty}"],
    "quantize --inspect file": ["quantize", "--inspect", "{file}"],
    "eval empty": ["eval", "{empty}"],
    "eval missing": ["eval", "{missing}"],
    "eval file": ["eval", "{file}"],
    "submit empty": ["submit", "{empty}", "--out", "{out}", "--name", "n", "--author", "a", "--github-id", "g"],
    "submit missing": ["submit", "{missing}", "--out", "{out}", "--name", "n", "--author", "a", "--github-id", "g"],
    "data stats empty": ["data", "stats", "{empty}"],
    "data stats missing": ["data", "stats", "{missing}"],
    "data check empty": ["data", "check", "{empty}"],
    "data build empty text": ["data", "build", "--text", "{empty}", "--out", "{out}"],
    "data build missing text": ["data", "build", "--text", "{missing}", "--out", "{out}"],
    "train empty data": ["train", "--preset", "tiny", "--data", "{empty}", "--out", "{out}"],
    "train missing data": ["train", "--preset", "tiny", "--data", "{missing}", "--out", "{out}"],
    "train --resume empty": ["train", "--resume", "{empty}"],
    "run missing data": ["run", "--preset", "tiny", "--data", "{missing}", "--out", "{out}"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_folder_is_one_line_and_exit_1(tmp_path, capsys, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "a_file").write_text("not a run\n")
    paths = {"empty": empty, "missing": tmp_path / "missing", "file": tmp_path / "a_file", "out": tmp_path / "out"}
    argv = [a.format(**paths) for a in CASES[case]]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgolf: error: ") and "\n" not in err, err
    assert list(empty.iterdir()) == []  # nothing written into the wrong folder


@pytest.mark.parametrize("command", ["train", "run", "submit"])
def test_out_naming_an_existing_file_is_one_line(tmp_path, capsys, command):
    if not (SHARED / "fineweb_sp1024").is_dir():
        pytest.skip("shared development data not present")
    target = tmp_path / "a_file"
    target.write_text("keep me\n")
    data = ["--data", str(SHARED / "fineweb_sp1024"), "--tokenizer", str(SHARED / "tokenizers" / "fineweb_1024_bpe.model")]
    if command == "submit":
        from tests.test_submit import fake_seed

        fake_seed(tmp_path / "run", 1)
        argv = ["submit", str(tmp_path / "run"), "--out", str(target), "--name", "n", "--author", "a", "--github-id", "g"]
    else:
        argv = [command, "--preset", "tiny", *data, "--out", str(target)] + (["--stop-after", "1"] if command == "train" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pgolf: error: ") and str(target) in err[-1] and "Traceback" not in "".join(err)
    assert target.read_text() == "keep me\n"

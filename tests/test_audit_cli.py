"""``pgolf audit``: each file decoded in an isolated child; accepted -> exit 0, a corrupt or
hostile file -> its one-line rejection and exit 1; misuse -> one line, exit 1; ``--fuzz``
runs the fuzzer's cases."""

import pytest

from pgolf.audit import surgery
from pgolf.cli import main


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    p = tmp_path_factory.mktemp("audit") / "ok.pgz"
    p.write_bytes(surgery.base_artifact("int8"))
    return p


def test_valid_artifact_is_accepted(valid, capsys):
    assert main(["audit", str(valid)]) == 0
    assert capsys.readouterr().out.startswith(f"{valid}: accepted (child peak RSS ")


def test_corrupt_and_hostile_artifacts_are_rejected_with_the_loaders_line(valid, tmp_path, capsys):
    flipped = bytearray(valid.read_bytes())
    flipped[60] ^= 0xFF
    (tmp_path / "flip.pgz").write_bytes(bytes(flipped))
    bomb = surgery.bomb(valid.read_bytes(), surgery._CODEC_LZMA, zeros=256 << 20)  # sealed with the small length
    (tmp_path / "bomb.pgz").write_bytes(bomb)
    files = [str(tmp_path / "flip.pgz"), str(tmp_path / "bomb.pgz"), str(valid)]
    assert main(["audit", *files]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{files[0]}: rejected: corrupt artifact: payload checksum mismatch")
    assert lines[1].startswith(f"{files[1]}: rejected: ") and "UNSAFE" not in lines[1]
    assert lines[2].startswith(f"{files[2]}: accepted")


def test_misuse_is_one_line(valid, tmp_path, capsys):
    assert main(["audit"]) == 1
    assert main(["audit", str(tmp_path / "missing.pgz")]) == 1
    assert main(["audit", "--fuzz", str(valid)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("pgolf: error: ") for e in err)
    assert "missing.pgz: no such file" in err[1]


def test_fuzz_runs_its_cases(capsys):
    assert main(["audit", "--fuzz", "--cases", "12", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("12 cases (random 12)") and "0 failures" in out

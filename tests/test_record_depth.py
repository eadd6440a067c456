"""The record preset's layer positions (loops 3-5, lanes from 8, XSA on all 11) follow an
overridden ``num_layers`` proportionally, with a note on stderr; explicit values win."""

from __future__ import annotations

import pytest

from pgolf.cli import main
from pgolf.errors import ConfigError
from pgolf.presets import resolve_config

FIELDS = ("loop_start", "loop_end", "parallel_start_layer", "xsa_last_n")


def positions(cfg) -> tuple[int, ...]:
    return tuple(getattr(cfg.model, f) for f in FIELDS)


def test_record_at_11_layers_keeps_its_positions_silently(capsys):
    assert positions(resolve_config("record")) == (3, 5, 8, 11)
    assert positions(resolve_config("record", ["model.num_layers=11"])) == (3, 5, 8, 11)
    assert capsys.readouterr().err == ""


def test_record_at_4_layers_maps_positions_and_says_so(capsys):
    cfg = resolve_config("record", ["model.model_dim=128", "model.num_layers=4"])
    # round(i * 4 / 11): loops 3..5 -> 1..2, lanes from 8 -> 3, XSA on all 11 -> all 4
    assert positions(cfg) == (1, 2, 3, 4)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: note: preset record's layer positions")
    assert "loop_start 3->1, loop_end 5->2, parallel_start_layer 8->3, xsa_last_n 11->4" in err[0]


@pytest.mark.parametrize("layers", range(1, 24))
def test_every_depth_resolves_to_a_valid_record(layers):
    cfg = resolve_config("record", [f"num_layers={layers}"])
    m = cfg.model
    assert 0 <= m.loop_start <= m.loop_end < layers and m.xsa_last_n == layers
    assert (m.parallel_start_layer > m.loop_end) == (layers >= 3)  # lanes after the loop where room allows


def test_the_environment_moves_the_depth_too(capsys):
    assert positions(resolve_config("record", env={"NUM_LAYERS": "4"})) == (1, 2, 3, 4)
    assert positions(resolve_config("record", env={"NUM_LAYERS": "4", "LOOP_START": "0"})) == (0, 2, 3, 4)


def test_explicit_values_win(capsys):
    cfg = resolve_config("record", ["num_layers=4", "loop_start=0", "model.parallel_start_layer=2"])
    assert positions(cfg) == (0, 2, 2, 4)
    err = capsys.readouterr().err
    assert "loop_end 5->2" in err and "loop_start" not in err and "parallel_start_layer" not in err
    # an explicit value equal to the 11-layer preset's is still the user's choice: no move, no note
    cfg = resolve_config("record", ["num_layers=4", "loop_start=3", "loop_end=3", "parallel_start_layer=1",
                                    "xsa_last_n=2"])
    assert positions(cfg) == (3, 3, 1, 2) and capsys.readouterr().err == ""


def test_explicit_out_of_range_values_still_fail_in_one_line(capsys):
    with pytest.raises(ConfigError, match="loop_start <= loop_end < num_layers"):
        resolve_config("record", ["num_layers=4", "loop_end=7"])
    assert main(["train", "--preset", "record", "--dry-run", "--set", "num_layers=4",
                 "--set", "parallel_start_layer=8"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pgolf: error:") and "parallel_start_layer 8 outside 0..3" in err[-1]


def test_other_presets_do_not_move(capsys):
    with pytest.raises(ConfigError, match="value_embed_layers"):
        resolve_config("seed", ["num_layers=4"])  # the seed's VE layers are the user's to choose
    assert capsys.readouterr().err == ""


def test_dry_run_of_a_small_record(capsys):
    assert main(["train", "--preset", "record", "--dry-run", "--set", "model_dim=128", "--set", "num_layers=4"]) == 0
    out, err = capsys.readouterr()
    assert '"loop_start": 1' in out and '"parallel_start_layer": 3' in out
    assert "follow num_layers=4" in err

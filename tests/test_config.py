"""Config presets, environment-variable and --set overrides, and `pgolf train --dry-run`."""

import json

import pytest

from pgolf.cli import main
from pgolf.config import RunConfig
from pgolf.errors import ConfigError
from pgolf.presets import PRESETS, get_preset, resolve_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_round_trips(name):
    cfg = resolve_config(name)
    assert cfg.preset == name
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again.to_dict() == cfg.to_dict()


def test_env_overrides_apply_then_sets_win():
    env = {"NUM_LAYERS": "3", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "ITERATIONS": "7",
           "MAX_WALLCLOCK_SECONDS": "12.5", "TRAIN_SEQ_LEN": "128", "SEED": "5", "MLP_MULT": "2"}
    cfg = resolve_config("tiny", sets=["iterations=9", "train.seed=11", "value_embed_layers=1,2"], env=env)
    assert (cfg.model.num_layers, cfg.model.model_dim, cfg.model.num_heads, cfg.model.num_kv_heads) == (3, 64, 4, 2)
    assert cfg.model.mlp_mult == 2.0 and cfg.train.seq_len == 128
    assert cfg.train.max_wallclock_seconds == 12.5
    assert cfg.train.iterations == 9 and cfg.train.seed == 11  # --set beats the environment


def test_sets_coerce_types_and_reject_bad_input():
    cfg = resolve_config("tiny", sets=["qat=false", "value_embed_layers=1,2", "matrix_lr=0.05", "loader_order=shuffle"])
    assert cfg.train.qat is False and cfg.model.value_embed_layers == (1, 2) and cfg.train.matrix_lr == 0.05
    assert cfg.train.loader_order == "shuffle"
    for bad in (["no_such_key=1"], ["iterations=abc"], ["seq_len=128"], ["iterations"], ["num_layers=inf"]):
        with pytest.raises(ConfigError):
            resolve_config("tiny", sets=bad)
    with pytest.raises(ConfigError):
        get_preset("nope")


def test_dry_run_prints_config_and_seed_param_count(capsys):
    assert main(["train", "--preset", "seed", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "params: 44258604"
    cfg = json.loads("\n".join(out[:-1]))
    assert cfg["model"]["num_layers"] == 13 and cfg["train"]["batch_tokens"] == 786432


def test_dry_run_applies_sets(capsys):
    assert main(["train", "--preset", "tiny", "--dry-run", "--set", "num_layers=2", "--set", "value_embed_layers=0,1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads("\n".join(out[:-1]))["model"]["num_layers"] == 2
    assert out[-1].startswith("params: ")


def test_train_without_data_is_one_line_error(capsys):
    assert main(["train", "--preset", "tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0]

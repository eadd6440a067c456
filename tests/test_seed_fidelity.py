"""The seed preset is the seed's function: rotary rescaling above 1024 tokens, its
optimizer groups, every environment variable its script reads, legacy configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.config import ENV_OVERRIDES, RunConfig
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset, resolve_config
from pgolf.train.groups import assign_groups


def _small_seed(**model):
    """The seed architecture (13 layers' features, GQA 8/4, 16 rotary dims) at a small width."""
    cfg = get_preset("seed")
    m = cfg.model
    m.num_layers, m.model_dim, m.xsa_last_n, m.value_embed_layers = 4, 144, 2, (2, 3)  # head_dim 18
    m.bigram_dim, m.value_embed_dim = 32, 32
    for k, v in model.items():
        setattr(m, k, v)
    return cfg


def _random_model(cfg):
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():  # every weight non-zero, so attention matters
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def seed_rotary_tables(T: int, rd: int = 16, base: float = 10000.0, train_len: int = 1024):
    """The seed's rule, from first principles (float64): base' = base (T/train)^(rd/(rd-2))."""
    if T > train_len:
        base = base * (T / train_len) ** (rd / (rd - 2))
    inv = 1.0 / base ** (np.arange(0, rd, 2) / rd)
    ang = np.outer(np.arange(T), inv)
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)[None, :, None, :]  # noqa: E731
    return as_t(np.cos(ang)), as_t(np.sin(ang)), base


def test_rescaled_base_at_2048_is_about_22081():
    assert seed_rotary_tables(8)[2] == 10000.0
    assert seed_rotary_tables(2048)[2] == pytest.approx(22081, abs=1)
    rot = GPT(_small_seed().model).blocks[0].attn.rotary
    assert rot.base_for(1024) == 10000.0 and rot.base_for(2048) == pytest.approx(seed_rotary_tables(2048)[2])


def test_logits_at_2048_match_the_seed_rotary_rule():
    cfg = _small_seed()
    model = _random_model(cfg)
    idx = torch.randint(0, cfg.model.vocab_size, (1, 2048), generator=torch.Generator().manual_seed(1))
    rotary = model.blocks[0].attn.rotary
    with torch.no_grad():
        got = model.forward_logits(idx)
        cos, sin, _ = seed_rotary_tables(2048)
        rotary.cos_sin = lambda T, device, dtype: (cos, sin)  # the reference tables, same weights
        want = model.forward_logits(idx)
        del rotary.cos_sin
        unscaled = GPT(_small_seed(rope_train_seq_len=0).model)
        unscaled.load_state_dict(model.state_dict())
        old = unscaled.eval().forward_logits(idx)
    err = (got - want).abs().max().item()
    print(f"T=2048: max |pgolf - seed rule| = {err:.2e}; vs never rescaling {(got - old).abs().max().item():.3f}")
    assert err < 1e-5
    assert (got - old).abs().max().item() > 1e-3  # the rule matters at 2048
    with torch.no_grad():  # at T <= 1024 both agree exactly
        assert torch.equal(model.forward_logits(idx[:, :1024]), unscaled.forward_logits(idx[:, :1024]))


def _groups(cfg):
    with torch.device("meta"):
        model = GPT(cfg.model)
    names = [n for n, _ in model.named_parameters()]
    groups = {g.name: g for g in assign_groups(names, cfg.train, cfg.model.tie_embeddings)}
    return groups, names


def test_seed_optimizer_routing():
    cfg = get_preset("seed")
    groups, names = _groups(cfg)
    listed = [n for g in groups.values() for n in g.params]
    assert sorted(listed) == sorted(names)  # every parameter exactly once
    muon = set(groups["muon"].params)
    assert muon == {f"blocks.{i}.{m}.weight" for i in range(13)
                    for m in ("attn.q", "attn.k", "attn.v", "attn.out", "mlp.up", "mlp.down")}
    assert groups["token"].params == ["tok_emb.weight", "bigram.table.weight", "value_embed.table.weight"]
    assert groups["token"].lr == 0.035 and groups["scalar"].lr == 0.025 and groups["muon"].lr == 0.025
    scalar = set(groups["scalar"].params)
    for n in ("bigram.proj.weight", "bigram.scale", "value_embed.proj.weight", "value_embed.scale",
              "blocks.11.ve_scale", "blocks.12.ve_scale", "skip_weights", "smear.gate", "blocks.0.attn.q_gain",
              "blocks.0.attn_scale", "blocks.0.mlp_scale", "blocks.0.resid_mix"):
        assert n in scalar, n
    assert set(groups) == {"muon", "token", "scalar"}


def test_untied_head_and_embedding_get_the_challenge_lrs():
    cfg = get_preset("seed")
    cfg.model.tie_embeddings = False
    groups, _ = _groups(cfg)
    assert groups["head"].params == ["lm_head.weight"] and groups["head"].lr == 0.008
    assert groups["head"].weight_decay == 0.0
    assert groups["embed"].params == ["tok_emb.weight"] and groups["embed"].lr == 0.6
    assert "tok_emb.weight" not in groups["token"].params


def _dry_run(capsys, monkeypatch, env=None, args=()):
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    assert main(["train", "--preset", "seed", "--dry-run", *args]) == 0
    out, err = capsys.readouterr()
    return json.loads(out[: out.rindex("params:")]), err


def test_dry_run_lists_optimizer_groups_and_reads_env(capsys, monkeypatch):
    j, _ = _dry_run(capsys, monkeypatch)
    groups = j["optimizer_groups"]
    assert [g["name"] for g in groups] == ["muon", "token", "scalar"]
    assert all(set(g) == {"name", "optimizer", "lr", "weight_decay", "params"} for g in groups)
    assert sum(len(g["params"]) for g in groups) == len({p for g in groups for p in g["params"]})
    assert j["model"]["value_embed_layers"] == [11, 12]
    j, _ = _dry_run(capsys, monkeypatch, {"VE_LAYERS": "9,10", "MUON_WD": "0.05"})
    assert j["model"]["value_embed_layers"] == [9, 10]
    assert [g["weight_decay"] for g in j["optimizer_groups"] if g["name"] == "muon"] == [0.05]


#: Item 3 of issue 9: every variable, a value different from the seed's default, and
#: where the resolved config shows it.
ENV_CASES = {
    "VE_LAYERS": ("9,10", "model.value_embed_layers", (9, 10)),
    "VE_DIM": ("64", "model.value_embed_dim", 64),
    "MUON_WD": ("0.05", "train.muon_wd", 0.05),
    "ADAM_WD": ("0.02", "train.adam_wd", 0.02),
    "ROPE_DIMS": ("24", "model.rope_dims", 24),
    "XSA_LAST_N": ("3", "model.xsa_last_n", 3),
    "QK_GAIN_INIT": ("5.0", "model.q_gain_init", 5.0),
    "BIGRAM_VOCAB_SIZE": ("1536", "model.bigram_buckets", 1536),
    "BIGRAM_DIM": ("64", "model.bigram_dim", 64),
    "MUON_MOMENTUM_WARMUP_START": ("0.85", "train.muon_momentum_warmup_start", 0.85),
    "MUON_MOMENTUM_WARMUP_STEPS": ("500", "train.muon_momentum_warmup_steps", 500),
    "SWA_EVERY": ("25", "train.swa_every", 25),
    "BETA1": ("0.8", "train.adam_beta1", 0.8),
    "BETA2": ("0.99", "train.adam_beta2", 0.99),
    "TIED_EMBED_LR": ("0.05", "train.tied_embed_lr", 0.05),
    "EMBED_LR": ("0.5", "train.embed_lr", 0.5),
    "HEAD_LR": ("0.01", "train.head_lr", 0.01),
    "ADAM_EPS": ("1e-7", "train.adam_eps", 1e-7),
    "MUON_BACKEND_STEPS": ("4", "train.muon_ns_steps", 4),
    "TIED_EMBED_INIT_STD": ("0.01", "model.tied_embed_init_std", 0.01),
    "EVAL_SEQ_LEN": ("1024", "eval.seq_len", 1024),
    "ROPE_TRAIN_SEQ_LEN": ("2048", "model.rope_train_seq_len", 2048),
}


def _get(cfg, key):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


@pytest.mark.parametrize("var", sorted(ENV_CASES))
def test_every_seed_variable_takes_effect(var, capsys):
    value, key, want = ENV_CASES[var]
    assert ENV_OVERRIDES[var] == key
    base = resolve_config("seed")
    assert _get(base, key) != want
    cfg = resolve_config("seed", env={var: value})
    assert _get(cfg, key) == want
    assert capsys.readouterr().err == ""  # no warning for a variable that is read


def test_switches_and_lookalikes(capsys):
    cfg = resolve_config("seed", env={"VE_ENABLED": "0", "SWA_ENABLED": "0"})
    assert cfg.model.value_embed_dim == 0 and cfg.train.swa_every == 0
    assert capsys.readouterr().err == ""
    resolve_config("seed", env={"QK_NORM": "0", "LATE_QAT_THRESHOLD": "0.15", "HOME": "/x"})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("pgolf: warning: ") for line in err)
    assert any("QK_NORM" in line and "--set model.qk_norm" in line for line in err)
    assert any("LATE_QAT_THRESHOLD" in line for line in err)


def test_pgolf_01_configs_load_with_their_old_meaning():
    old = get_preset("tiny").to_dict()
    for section, key in (("model", "rope_train_seq_len"), ("train", "precision"), ("train", "optimizer_table"),
                         ("train", "tied_embed_lr"), ("train", "muon_wd"), ("train", "adam_wd"), ("train", "head_lr")):
        old[section].pop(key)
    old["train"]["embed_lr"], old["train"]["weight_decay"] = 0.03, 0.07
    cfg = RunConfig.from_dict(old)
    assert cfg.model.rope_train_seq_len == 0 and cfg.train.precision == "fp32-master"
    assert cfg.train.optimizer_table == "v0.1" and cfg.train.tied_embed_lr == 0.03
    assert cfg.train.muon_wd == cfg.train.adam_wd == 0.07


def test_tiny_is_unchanged_by_the_seed_fidelity_switches():
    t = get_preset("tiny")
    assert t.model.rope_train_seq_len == 0 and t.train.precision == "fp32-master"
    assert t.train.optimizer_table == "v0.1" and t.train.tied_embed_lr == 0.03
    seed = get_preset("seed")
    assert seed.model.rope_train_seq_len == 1024 and seed.train.precision == "bf16"
    assert math.isclose(seed.train.tied_embed_lr, 0.035)


def test_bigram_projection_is_quantized_at_3_bits_as_the_seed_does():
    from pgolf.quant.calibrate.allocation import plan_tensor, role_bits

    cfg = get_preset("seed")
    with torch.device("meta"):
        model = GPT(cfg.model)
    p = dict(model.named_parameters())["bigram.proj.weight"]
    plan = plan_tensor("bigram.proj.weight", model.param_roles()["bigram.proj.weight"], p.shape, True, cfg.quant,
                       role_bits(cfg.quant))
    assert plan.quantized and plan.bits == 3

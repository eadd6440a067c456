"""The training loop (DESIGN.md §5): Muon + AdamW, schedules, EMA/SWA, wall-clock cap, resume.

:func:`train` builds the GPT of ``cfg.model``, trains it on the train shards of
``data_dir`` and fills ``out_dir`` (the run directory): ``config.json``, ``train.log``,
``metrics.jsonl``, ``checkpoint.pt`` (resume state), ``model.pt`` (final weights: the
EMA when ``final_weights="ema"``, the SWA average for ``"swa"``, else the raw weights)
and ``train_summary.json`` (val loss/bpb of those weights on the whole val split with
non-overlapping ``seq_len`` windows). One step: QAT's fake-quant refresh (once), ``accum``
micro-batches per rank (forward/backward with bf16 weights for ``train.precision=bf16``,
under bf16 autocast on CUDA; compiled with ``fullgraph=True`` on CUDA), gradient
averaging across ranks (Muon
matrices by reduce-scatter, the rest by all-reduce), global-norm clipping, the Muon
and AdamW steps, the EMA update, and an SWA snapshot in the warm-down. The stop
(wall-clock cap, iteration limit, Ctrl-C/SIGTERM) is agreed by all ranks; training time
is the loop's wall clock as the seed measures it. A NaN or inf training loss (seen at each
log line) stops the run with ``diverged.txt`` (why) instead of ``model.pt``; resume refuses such a
run. Optimizer groups come from
:mod:`pgolf.train.groups`. Run::

    pgolf train --preset tiny --data DATA_DIR --out runs/tiny                 # CPU / 1 GPU
    torchrun --nproc_per_node=8 -m pgolf train --preset seed --data DATA_DIR  # 8 GPUs
    pgolf train --resume runs/tiny                                            # continue
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import time
from pathlib import Path

import torch

from pgolf.collectives import all_gather_object, all_reduce
from pgolf.errors import ConfigError, PgolfError
from pgolf.fileio import atomic_write_json, atomic_write_text
from pgolf.train import checkpoint as ckpt
from pgolf.train import distributed as dist_util
from pgolf.train import schedule
from pgolf.train.averaging import EMA, SWA
from pgolf.model.compiled import for_eval
from pgolf.train.optim import Muon, make_adamw, split_params
from pgolf.train.precision import apply_precision, muon_dtypes
from pgolf.train.runlog import RunLog

#: Dense bf16 peak FLOP/s by GPU name fragment, for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "B200": 2250e12, "A100": 312e12, "L40": 181e12, "4090": 165e12}


# ------------------------------------------------------------------------ helpers
def use_compile(tcfg, device) -> bool:
    if tcfg.compile not in ("auto", "on", "off"):
        raise ConfigError(f"train.compile must be auto, on or off, got {tcfg.compile!r}")
    return tcfg.compile == "on" or (tcfg.compile == "auto" and device.type == "cuda")


def uses_bf16(tcfg, device) -> bool:
    """bf16 autocast on CUDA for "auto"; "bf16" forces it (CPU too); "off" disables."""
    if tcfg.autocast not in ("auto", "bf16", "off"):
        raise ConfigError(f"train.autocast must be auto, bf16 or off, got {tcfg.autocast!r}")
    return tcfg.autocast == "bf16" or (tcfg.autocast == "auto" and device.type == "cuda")


def autocast_ctx(tcfg, device):
    """The autocast context of :func:`uses_bf16` (a null context when off)."""
    if not uses_bf16(tcfg, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def flops_per_token(model, cfg) -> float:
    """Training FLOPs per token: 6 per weight (minus the embedding lookups) + causal attention;
    with depth recurrence on, a block's weights and attention count once per run of it."""
    m = cfg.model
    n = sum(p.numel() for p in model.parameters())
    lookups = sum(p.numel() for name, p in model.named_parameters() if name.endswith("table.weight"))
    order = getattr(model, "looped_order", None) if getattr(model, "looping", False) else None
    runs = len(order) if order else m.num_layers
    for i in set(order or ()):  # the extra runs of the recurrent blocks
        n += (order.count(i) - 1) * sum(p.numel() for p in model.blocks[i].parameters())
    return 6.0 * (n - lookups) + 6.0 * runs * m.model_dim * cfg.train.seq_len


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def evaluate_bpb(model, tokens, tables, seq_len: int, env, batch_seqs: int = 16, use_amp: bool = False,
                 max_tokens: int = 0, show: bool = False, token_bytes=None) -> dict:
    """Val loss (nats/token) and bpb over non-overlapping ``seq_len`` windows of ``tokens``
    (:func:`pgolf.model.bpb.evaluate`, shared between ranks). ``max_tokens`` > 0 keeps
    only the first windows covering that many targets (for intermediate evals).
    ``token_bytes``: the split's per-token byte counts, when it has byte files."""
    from pgolf.model.bpb import evaluate

    if max_tokens:
        tokens = tokens[: max(1, max_tokens // seq_len) * seq_len + 1]
    res = evaluate(model, tokens, tables, seq_len, stride=None, batch_seqs=batch_seqs, device=env.device,
                   progress=show, autocast=use_amp, token_bytes=token_bytes)
    return {"val_loss": res.loss, "val_bpb": res.bpb, "val_tokens": res.tokens}


def replica_check(model, env) -> str:
    """Compare a sha256 of every rank's weights; one log line saying whether all agree."""
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    digests = all_gather_object(h.hexdigest())
    if len(set(digests)) == 1:
        return f"replica check: all {env.world} ranks hold identical weights (sha256 {digests[0][:16]})"
    return "WARNING replica check: ranks hold different weights: " + ", ".join(d[:16] for d in digests)


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked between steps (main thread only)."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.flag:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


# ------------------------------------------------------------------------ trainer
class Trainer:
    """Model, optimizers, averages and loader for one rank; :meth:`step` is one optimizer step."""

    def __init__(self, cfg, data_dir, env, log: RunLog | None = None):
        from pgolf.data.loader import TrainLoader
        from pgolf.model.gpt import GPT

        self.cfg, self.env, self.log = cfg, env, log
        t = cfg.train
        if t.final_weights not in ("ema", "swa", "raw"):
            raise ConfigError(f"train.final_weights must be ema, swa or raw, got {t.final_weights!r}")
        torch.manual_seed(t.seed)
        self.model = GPT(cfg.model).to(env.device)
        apply_precision(self.model, t.precision)
        self.plain_keys = list(self.model.state_dict())
        self.qat = None
        if t.qat:
            try:
                from pgolf.quant.schemes import qat as qat_mod
            except ModuleNotFoundError as e:
                raise PgolfError("train.qat is on but pgolf.quant.schemes.qat is not available; use --set qat=false") from e
            qat_mod.prepare_qat(self.model, cfg.quant)
            self.qat = qat_mod
        self.model.looping = cfg.model.num_loops > 0 and cfg.model.enable_looping_at <= 0  # see schedule.looping_on
        self.fwd = torch.compile(self.model, fullgraph=True) if use_compile(t, env.device) else self.model
        self.amp = autocast_ctx(t, env.device)
        self.groups, named = split_params(self.model, t)
        self.muon = self._make_muon(named)
        self.muon_lr = self.muon.base_lr
        self.adam = make_adamw(self.groups, named, t, fused=env.device.type == "cuda")
        self.adam_params = [named[n] for g in self.groups if g.optimizer == "adamw" for n in g.params]
        self.all_params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = EMA(self.param_state(), t.ema_decay) if t.ema_decay > 0 else None
        self.swa = SWA(self.param_state()) if t.swa_every > 0 else None
        self.loader = TrainLoader(data_dir, t.seq_len, t.micro_batch_seqs, t.batch_tokens, env.rank, env.world,
                                  order=t.loader_order, seed=t.seed, vocab_size=cfg.model.vocab_size)
        self.step_num = 0
        self.elapsed = 0.0  # training seconds: the loop's wall clock (excludes warm-up, evals and checkpoints)

    def _make_muon(self, named: dict) -> Muon:
        """Muon over the table's Muon group (bf16 Newton–Schulz on CUDA; state dtypes by precision)."""
        t, env = self.cfg.train, self.env
        group = next((g for g in self.groups if g.optimizer == "muon"), None)
        state_dtype, comm_dtype = muon_dtypes(t.precision, env.device)
        return Muon([(n, named[n]) for n in (group.params if group else [])], lr=group.lr if group else t.matrix_lr,
                    momentum=t.muon_momentum_warmup_start, nesterov=True, ns_steps=t.muon_ns_steps,
                    weight_decay=group.weight_decay if group else 0.0, world=env.world, rank=env.rank,
                    ns_dtype=torch.bfloat16 if env.device.type == "cuda" else torch.float32,
                    state_dtype=state_dtype, comm_dtype=comm_dtype,
                    ns_schedule=t.muon_ns_schedule, row_normalize=t.muon_row_normalize)

    # --------------------------------------------------------------- state
    def param_state(self) -> dict:
        return {n: p for n, p in self.model.named_parameters()}

    def plain_state(self) -> dict:
        """The model's state_dict without QAT buffers (what a fresh GPT loads), floats in fp32."""
        sd = self.model.state_dict()
        return {k: _fp32(sd[k].detach().cpu()).clone() for k in self.plain_keys}

    def state_dict(self) -> dict:
        """Full resume state (collective: call on every rank)."""
        rng = {"torch": torch.get_rng_state()}
        if self.env.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.env.device)
        return {
            "version": 1,
            "step": self.step_num,
            "elapsed_s": self.elapsed,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "muon": self.muon.state_dict(),
            "adam": self.adam.state_dict() if self.adam else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "swa": self.swa.state_dict() if self.swa else None,
            "loader": self.loader.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.muon.load_state_dict(st["muon"])
        if self.adam and st["adam"]:
            self.adam.load_state_dict(st["adam"])
        if self.ema and st["ema"]:
            self.ema.load_state_dict(st["ema"])
        if self.swa and st["swa"]:
            self.swa.load_state_dict(st["swa"])
        self.loader.load_state_dict(st["loader"])
        torch.set_rng_state(st["rng"]["torch"])
        if "cuda" in st["rng"] and self.env.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng"]["cuda"], self.env.device)
        self.step_num, self.elapsed = int(st["step"]), float(st["elapsed_s"])

    # ---------------------------------------------------------------- step
    def _sync_adam_grads(self) -> None:
        if not self.env.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.adam_params]
        flat = torch.cat([g.float().flatten() for g in grads])  # bf16 and fp32 grads: reduced in fp32
        dist_util.all_reduce_sum(flat, self.env)
        flat.div_(self.env.world)
        off = 0
        for p, g in zip(self.adam_params, grads):
            n = g.numel()
            p.grad = flat[off : off + n].view_as(p).to(p.dtype).clone()
            off += n

    def step(self, lr_s: float, momentum: float) -> torch.Tensor:
        """One optimizer step at lr scale ``lr_s``; returns this rank's mean loss (tensor)."""
        t = self.cfg.train
        if self.qat:
            self.qat.update_qat(self.model, lr_s, self.cfg.quant)
        accum = self.loader.accum
        loss_sum = torch.zeros((), device=self.env.device)
        for micro in range(accum):
            x, y = self.loader.micro_batch(micro)
            if self.env.device.type == "cuda":
                x, y = x.pin_memory().to(self.env.device, non_blocking=True), y.pin_memory().to(self.env.device, non_blocking=True)
            with self.amp:
                loss = self.fwd(x, y)
            (loss / accum).backward()
            loss_sum += loss.detach().float()
        self.loader.advance()
        self.muon.reduce_grads()
        self._sync_adam_grads()
        scale = 1.0
        if t.grad_clip > 0:
            sq = self.muon.grad_sq_norm()
            for p in self.adam_params:
                if p.grad is not None:
                    sq = sq + p.grad.float().square().sum()
            norm = sq.sqrt()
            scale = torch.clamp(t.grad_clip / (norm + 1e-6), max=1.0)
            for p in self.adam_params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        self.muon.lr = self.muon_lr * lr_s
        self.muon.momentum = momentum
        self.muon.step(scale)
        if self.adam:
            for g in self.adam.param_groups:
                g["lr"] = g["base_lr"] * lr_s
            self.adam.step()
        for p in self.all_params:
            p.grad = None
        self.step_num += 1
        if self.ema:
            self.ema.update(self.param_state())
        if self.swa and lr_s < t.swa_lr_threshold and self.step_num % t.swa_every == 0:
            self.swa.add(self.param_state())
        return loss_sum / accum

    def warmup(self, steps: int) -> None:
        """Run ``steps`` steps (compilation, allocator warm-up), then restore everything."""
        if steps <= 0:
            return
        saved = copy.deepcopy(self.state_dict())
        for _ in range(steps):
            self.step(1.0, self.cfg.train.muon_momentum_warmup_start)
        if self.cfg.model.num_loops > 0 and not self.model.looping:  # compile the looped graph too
            self.model.looping = True
            self.step(1.0, self.cfg.train.muon_momentum_warmup_start)
            self.model.looping = False
        self.load_state_dict(saved)
        if self.env.device.type == "cuda":
            torch.cuda.synchronize(self.env.device)

    def final_state(self) -> tuple[dict, str]:
        """(weights for model.pt, which ones) following ``train.final_weights``."""
        t = self.cfg.train
        plain = self.plain_state()
        if t.final_weights == "ema":
            if not self.ema:
                raise ConfigError("final_weights=ema needs ema_decay > 0")
            avg, used = self.ema.averaged(), f"EMA (decay {self.ema.decay})"
        elif t.final_weights == "swa":
            if not self.swa or not self.swa.count:
                raise PgolfError("final_weights=swa but no SWA snapshot was taken (lr scale never fell below swa_lr_threshold at a multiple of swa_every)")
            avg, used = self.swa.averaged(), f"SWA ({self.swa.count} snapshots)"
        else:
            return plain, "raw"
        for k, v in avg.items():
            plain[k] = v.detach().cpu().to(plain[k].dtype).clone()
        return plain, used


# --------------------------------------------------------------------------- train
#: Written (instead of model.pt) when the training loss turns NaN or inf; resume refuses.
DIVERGED = "diverged.txt"

def _tables(tokenizer_path):
    from pgolf.data.tokenizer import byte_tables

    return byte_tables(tokenizer_path)


def _eval_model(cfg, state, env):
    from pgolf.model.gpt import GPT

    m = GPT(cfg.model).to(env.device)
    m.load_state_dict(state)
    return m


def train(cfg, data_dir, tokenizer_path, out_dir, resume: bool = False, stop_after: int | None = None,
          echo: bool = True) -> dict:
    """Train ``cfg`` on ``data_dir``; fill ``out_dir``; return the summary dict.

    ``stop_after`` stops (with a checkpoint, without final eval) once that many steps are
    done, leaving the schedule unchanged; ``pgolf train --resume`` continues from there.
    Returns ``{"val_loss", "val_bpb", "steps", "train_time_s"}``, or
    ``{"stopped": True, "steps", "train_time_s"}`` when stopped early.
    """
    from pgolf.data.loader import load_val_bytes, load_val_tokens

    out = Path(out_dir)
    env = dist_util.setup(cfg.train.device, cfg.train.threads)
    try:
        return _train(cfg, data_dir, tokenizer_path, out, env, resume, stop_after, echo, load_val_tokens, load_val_bytes)
    finally:
        dist_util.teardown(env)


def _train(cfg, data_dir, tokenizer_path, out, env, resume, stop_after, echo, load_val_tokens, load_val_bytes) -> dict:
    t = cfg.train
    tables = _tables(tokenizer_path)
    eval_len = cfg.eval.seq_len or t.seq_len
    val_tokens = load_val_tokens(data_dir, eval_len, cfg.model.vocab_size)
    val_bytes = load_val_bytes(data_dir, len(val_tokens))  # None unless the split has byte files
    if resume and (out / DIVERGED).is_file():
        raise PgolfError(f"{out}: cannot resume: {(out / DIVERGED).read_text()}")
    if resume and not (out / ckpt.CHECKPOINT).is_file():
        raise PgolfError(f"{out / ckpt.CHECKPOINT}: no checkpoint to resume from")
    if not resume and (out / ckpt.CHECKPOINT).exists():
        raise PgolfError(f"{out}: already holds a run (checkpoint.pt); use --resume or another --out")
    dist_util.barrier(env)
    log = RunLog(out, enabled=env.is_main, echo=echo)
    trainer = Trainer(cfg, data_dir, env, log)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if env.is_main:
        atomic_write_json(out / ckpt.CONFIG, {**cfg.to_dict(), "data_dir": str(data_dir), "tokenizer": str(tokenizer_path)})
    if resume:
        trainer.load_state_dict(ckpt.load_torch(out / ckpt.CHECKPOINT, map_location=env.device))
        log.line(f"resumed from {out / ckpt.CHECKPOINT} at step {trainer.step_num}, {trainer.elapsed:.1f}s trained")
    else:
        log.header(cfg, n_params, env, {
            "data": f"{data_dir} ({trainer.loader.stream.total:,} train tokens, {len(val_tokens) - 1:,} val targets)",
            "tokenizer": str(tokenizer_path),
            "batch": f"{t.batch_tokens:,} tokens/step = {env.world} ranks x {trainer.loader.accum} accum x "
                     f"{t.micro_batch_seqs} seqs x {t.seq_len}",
            "compile": use_compile(t, env.device), "autocast": t.autocast, "precision": t.precision,
        })
    trainer.warmup(t.warmup_steps)
    if t.warmup_steps > 0:
        log.line(f"warm-up: {t.warmup_steps} steps done, weights and optimizer states restored")
    result = _loop(trainer, cfg, env, log, val_tokens, tables, eval_len, stop_after, val_bytes)
    state = trainer.state_dict()
    if env.is_main:
        ckpt.save_torch(out / ckpt.CHECKPOINT, state)
    if result.get("stopped"):
        log.line(f"stopped at step {trainer.step_num} ({trainer.elapsed:.1f}s); continue with: pgolf train --resume {out}")
        return result
    if env.distributed:
        log.line(replica_check(trainer.model, env))
    final, used = trainer.final_state()
    if env.is_main:
        ckpt.save_torch(out / ckpt.MODEL, final)
    model = for_eval(_eval_model(cfg, final, env), env.device, t.compile)
    t0 = time.perf_counter()
    val = evaluate_bpb(model, val_tokens, tables, eval_len, env, cfg.eval.batch_seqs, uses_bf16(t, env.device),
                       show=log.echo and sys.stderr.isatty(), token_bytes=val_bytes)
    summary = {"val_loss": val["val_loss"], "val_bpb": val["val_bpb"], "steps": trainer.step_num,
               "train_time_s": round(trainer.elapsed, 3)}
    log.line(f"final weights: {used}; val_loss {val['val_loss']:.4f} val_bpb {val['val_bpb']:.4f} "
             f"({val['val_tokens']:,} tokens, {time.perf_counter() - t0:.1f}s); {trainer.step_num} steps in {trainer.elapsed:.1f}s")
    if env.is_main:
        atomic_write_json(out / "train_summary.json", summary)
    return summary


def _loop(trainer: Trainer, cfg, env, log: RunLog, val_tokens, tables, eval_len, stop_after, val_bytes=None) -> dict:
    t = cfg.train
    fpt = flops_per_token(trainer.model, cfg)
    peak = peak_flops(env.device)
    bar = _progress_bar(t, env, trainer.step_num)
    log.bar = bar
    interval_t, interval_steps, loss_acc = 0.0, 0, torch.zeros((), device=env.device)
    stopped = False
    # The training clock is the wall clock of the whole loop as the seed measures it
    # (stop checks, data, steps, logging), paused only for intermediate evaluations and
    # checkpoints; so the wall-clock cap means the same thing as in the seed's script.
    last = time.perf_counter()
    ckpt_at = trainer.elapsed  # training time of the last checkpoint (checkpoint_seconds)
    with _StopSignal() as sig:
        while True:
            now = time.perf_counter()
            trainer.elapsed += now - last
            interval_t += now - last
            last = now
            clock = torch.tensor([trainer.elapsed, float(sig.flag)], dtype=torch.float64)
            if env.distributed:
                all_reduce(clock, "max")
            elapsed, interrupted = float(clock[0]), bool(clock[1] > 0)
            trainer.elapsed = elapsed
            if schedule.should_stop(trainer.step_num, elapsed, t):
                break
            if interrupted or (stop_after is not None and trainer.step_num >= stop_after):
                stopped = True
                break
            lr_s = schedule.lr_scale(trainer.step_num, elapsed, t)
            if schedule.looping_on(trainer.step_num, elapsed, cfg) and not trainer.model.looping:
                trainer.model.looping = True  # one more compiled graph; the plain one stays cached
                log.line(f"depth recurrence on at step {trainer.step_num}: blocks {trainer.model.looped_order}")
            mom = schedule.muon_momentum(trainer.step_num, t)
            loss_acc += trainer.step(lr_s, mom)
            if env.device.type == "cuda":
                torch.cuda.synchronize(env.device)
            now = time.perf_counter()
            trainer.elapsed += now - last
            interval_t += now - last
            last = now
            interval_steps += 1
            if bar is not None:
                bar.update(1)
            step = trainer.step_num
            if step % max(1, t.log_every) == 0 or step == 1 or schedule.should_stop(step, trainer.elapsed, t):
                dist_util.all_reduce_sum(loss_acc, env)
                rec = {"step": step, "train_loss": float(loss_acc) / (interval_steps * env.world), "lr_scale": lr_s,
                       "tokens_per_s": interval_steps * t.batch_tokens / interval_t,
                       "ms_per_step": 1000.0 * interval_t / interval_steps, "elapsed_s": round(trainer.elapsed, 3)}
                if peak:
                    rec["mfu"] = rec["tokens_per_s"] * fpt / (peak * env.world)
                if t.val_every and step % t.val_every == 0:
                    rec.update(evaluate_bpb(trainer.model, val_tokens, tables, eval_len, env, cfg.eval.batch_seqs,
                                            uses_bf16(t, env.device), t.val_max_tokens, token_bytes=val_bytes))
                    last = time.perf_counter()  # evaluation time is not training time
                log.metrics(rec)
                log.line(_format(rec, t))
                if not rec["train_loss"] < float("inf"):  # NaN or inf: stop, say why in DIVERGED, finish nothing
                    why = f"the training loss was {rec['train_loss']} at step {step}"
                    if env.is_main:
                        atomic_write_text(log.dir / DIVERGED, why)
                    raise PgolfError(f"training stopped: {why}")
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['train_loss']:.3f}", lr=f"{lr_s:.2f}")
                interval_t, interval_steps, loss_acc = 0.0, 0, torch.zeros((), device=env.device)
            if t.checkpoint_every and step % t.checkpoint_every == 0 or 0 < t.checkpoint_seconds <= elapsed - ckpt_at:
                ckpt_at = elapsed
                state = trainer.state_dict()
                if env.is_main:
                    ckpt.save_torch(log.dir / ckpt.CHECKPOINT, state)
                last = time.perf_counter()  # nor is checkpointing
    if bar is not None:
        bar.close()
        log.bar = None
    return {"stopped": True, "steps": trainer.step_num, "train_time_s": trainer.elapsed} if stopped else {}


def eta_seconds(rec: dict, t) -> float:
    """Training seconds left after ``rec``'s step at its recent speed, capped by the wall clock."""
    left = (t.iterations - rec["step"]) * rec["ms_per_step"] / 1000
    if t.max_wallclock_seconds > 0:
        left = min(left, t.max_wallclock_seconds - rec["elapsed_s"])
    return max(left, 0.0)


def _format(rec: dict, t) -> str:
    s = (f"step {rec['step']}/{t.iterations} loss {rec['train_loss']:.4f} lr {rec['lr_scale']:.3f} "
         f"{rec['tokens_per_s']:,.0f} tok/s {rec['ms_per_step']:.1f} ms/step {rec['elapsed_s']:.1f}s "
         f"eta {eta_seconds(rec, t):.0f}s")
    if "val_bpb" in rec:
        s += f" val_loss {rec['val_loss']:.4f} val_bpb {rec['val_bpb']:.4f}"
    if "mfu" in rec:
        s += f" mfu {100 * rec['mfu']:.1f}%"
    return s


def _progress_bar(t, env, start: int):
    if not env.is_main or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=t.iterations, initial=start, desc="train", unit="step", dynamic_ncols=True, leave=False)

"""Train loader: shapes, determinism, process/accumulation invariance, resume, wrap; val stream."""

import numpy as np
import pytest
import torch

from pgolf.data.loader import TrainLoader, load_val_tokens
from pgolf.data.shards import write_shard
from pgolf.errors import ConfigError


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    write_shard(tmp_path / "fineweb_train_000000.bin", rng.integers(0, 500, 1000))
    write_shard(tmp_path / "fineweb_train_000001.bin", rng.integers(500, 1000, 777))
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(100) % 1000)
    return tmp_path


def _global_batch(loader_args, world, steps):
    """All micro-batches of `steps` steps, gathered over ranks, in global order."""
    loaders = [TrainLoader(rank=r, world=world, **loader_args) for r in range(world)]
    out = []
    for _ in range(steps):
        xs = {}
        for r, ld in enumerate(loaders):
            for a in range(ld.accum):
                xs[a * world + r] = ld.micro_batch(a)
            ld.advance()
        out.append(torch.cat([xs[j][0] for j in sorted(xs)]))
    return out


@pytest.mark.parametrize("order", ["sequential", "shuffle"])
def test_global_batch_independent_of_world_and_accum(data, order):
    args = dict(data=data, seq_len=16, micro_batch_seqs=2, batch_tokens=16 * 2 * 4, order=order, seed=3)
    one = _global_batch(args, 1, 30)  # 1 process x 4 accumulation steps
    two = _global_batch(args, 2, 30)  # 2 processes x 2
    four = _global_batch(args, 4, 30)  # 4 x 1
    for a, b, c in zip(one, two, four):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_shapes_targets_and_wrap(data):
    ld = TrainLoader(data, seq_len=16, micro_batch_seqs=3, batch_tokens=48, order="sequential")
    stream = np.concatenate([np.asarray(p) for p in ld.stream.parts]).astype(np.int64)
    seen = 0
    for _ in range(2 * ld.num_blocks // 3 + 5):  # more than two epochs: wraps around
        x, y = ld.micro_batch(0)
        assert x.shape == y.shape == (3, 16) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row in range(3):
            b = (seen + row) % ld.num_blocks
            assert np.array_equal(x[row].numpy(), stream[b * 16 : b * 16 + 16])
            assert np.array_equal(y[row].numpy(), stream[b * 16 + 1 : b * 16 + 17])
        seen += 3
        ld.advance()


def test_shuffle_is_seeded_and_covers_every_block(data):
    a = TrainLoader(data, 16, 1, 16, order="shuffle", seed=1)
    b = TrainLoader(data, 16, 1, 16, order="shuffle", seed=1)
    c = TrainLoader(data, 16, 1, 16, order="shuffle", seed=2)
    ids_a = [a._block_id(k) for k in range(a.num_blocks)]
    assert ids_a == [b._block_id(k) for k in range(b.num_blocks)]
    assert ids_a != [c._block_id(k) for k in range(c.num_blocks)]
    assert sorted(ids_a) == list(range(a.num_blocks))


def test_resume_position(data):
    a = TrainLoader(data, 16, 2, 64, order="shuffle", seed=0)
    for _ in range(5):
        a.advance()
    b = TrainLoader(data, 16, 2, 64, order="shuffle", seed=0)
    b.load_state_dict(a.state_dict())
    for acc in range(a.accum):
        assert torch.equal(a.micro_batch(acc)[0], b.micro_batch(acc)[0])


def test_bad_split_is_a_config_error(data):
    with pytest.raises(ConfigError, match="not a multiple"):
        TrainLoader(data, seq_len=16, micro_batch_seqs=3, batch_tokens=64)
    with pytest.raises(ConfigError):
        TrainLoader(data, 16, 1, 16, order="random")


def test_val_tokens_truncated_to_whole_windows(data):
    v = load_val_tokens(data, 16)
    assert len(v) == 1 + 6 * 16 and np.array_equal(v, np.arange(97))

"""ResumableBatchSampler: each rank's epoch order is torch's DistributedSampler's (seeded per epoch), the
batches cut that stream in order like torch's BatchSampler, and a resume at any iteration replays the rest
of the run exactly."""

from __future__ import annotations

import itertools

import pytest
from torch.utils.data import BatchSampler, DistributedSampler

from mrseg.engine.train.batch_sampler import ResumableBatchSampler

GRID = [  # (dataset_len, batch_size, world_size, seed)
    (10, 3, 1, 4),
    (10, 2, 2, 4),
    (7, 2, 3, 0),  # padded: 7 images over 3 ranks
    (5, 4, 2, 11),  # a batch longer than half an epoch
    (1, 2, 1, 3),  # one image
    (3, 1, 4, 2),  # more ranks than images
]


def distributed_order(n: int, *, epoch: int, seed: int, rank: int, world: int, shuffle: bool) -> list[int]:
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle,
                                 seed=seed * 1_000_003, drop_last=False)  # fmt: skip
    sampler.set_epoch(epoch)
    return list(sampler)


def indices(batches) -> list[list[int]]:
    return [[i for i, _ in b] for b in batches]


@pytest.mark.parametrize(("n", "batch", "world", "seed"), GRID)
@pytest.mark.parametrize("shuffle", [True, False])
def test_each_epoch_is_torchs_distributed_sampler_order(n, batch, world, seed, shuffle):
    for rank, epoch in itertools.product(range(world), range(4)):
        sampler = ResumableBatchSampler(n, batch, total_iters=1, seed=seed, rank=rank, world_size=world,
                                        shuffle=shuffle)  # fmt: skip
        ref = distributed_order(n, epoch=epoch, seed=seed, rank=rank, world=world, shuffle=shuffle)
        assert sampler.epoch_order(epoch) == ref


@pytest.mark.parametrize(("n", "batch", "world", "seed"), GRID)
def test_batches_cut_the_stream_of_epochs_in_order(n, batch, world, seed):
    total = 9
    for rank in range(world):
        got = list(ResumableBatchSampler(n, batch, total_iters=total, seed=seed, rank=rank, world_size=world))
        assert len(got) == total and all(len(b) == batch for b in got)
        stream = [
            i
            for epoch in range(total * batch)  # more epochs than the run reaches (each has >= 1 image)
            for i in distributed_order(n, epoch=epoch, seed=seed, rank=rank, world=world, shuffle=True)
        ]
        assert indices(got) == list(BatchSampler(stream, batch, drop_last=False))[:total]


def test_an_epoch_visits_every_image_once_and_the_next_epoch_in_another_order():
    n, batch = 12, 3
    batches = ResumableBatchSampler(n, batch, total_iters=3 * n // batch, seed=4)
    flat = [i for b in indices(batches) for i in b]
    epochs = [flat[k * n : (k + 1) * n] for k in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != list(range(n)) and len({tuple(e) for e in epochs}) == 3


@pytest.mark.parametrize(("n", "batch", "world", "seed"), GRID)
def test_a_resume_at_any_iteration_yields_the_rest_of_the_run(n, batch, world, seed):
    total = 11
    for rank in range(world):
        kw = dict(total_iters=total, seed=seed, rank=rank, world_size=world)
        full = list(ResumableBatchSampler(n, batch, **kw))
        for start in range(total + 1):
            resumed = ResumableBatchSampler(n, batch, start_iter=start, **kw)
            assert len(resumed) == total - start
            assert list(resumed) == full[start:]  # indices and augmentation seeds alike


def test_the_order_is_a_function_of_the_seed():
    def run(seed: int):
        return list(ResumableBatchSampler(20, 4, total_iters=10, seed=seed))

    assert run(7) == run(7)
    assert indices(run(7)) != indices(run(8))
    assert {s for b in run(7) for _, s in b}.isdisjoint({s for b in run(8) for _, s in b})


@pytest.mark.parametrize(("n", "world"), [(12, 3), (10, 2), (7, 3), (3, 4), (9, 1)])
def test_the_ranks_shards_of_an_epoch_are_disjoint_and_cover_it(n, world):
    for epoch in range(3):
        shards = [
            ResumableBatchSampler(n, 1, total_iters=1, seed=5, rank=r, world_size=world).epoch_order(epoch)
            for r in range(world)
        ]
        assert len({len(s) for s in shards}) == 1  # every rank runs the same number of iterations
        together = [i for s in shards for i in s]
        assert set(together) == set(range(n))
        padding = len(together) - n  # the wrap-around that evens the ranks out, as DistributedSampler's
        assert 0 <= padding < world
        assert sum(together.count(i) - 1 for i in range(n)) == padding


def test_every_item_of_a_run_gets_its_own_augmentation_seed():
    n, batch, world, total = 6, 2, 2, 9  # 3 epochs per rank
    items = [
        item
        for rank in range(world)
        for b in ResumableBatchSampler(n, batch, total_iters=total, seed=1, rank=rank, world_size=world)
        for item in b
    ]
    seeds = [s for _, s in items]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    for image in range(n):  # the same image is augmented differently in each epoch
        its = [s for i, s in items if i == image]
        assert len(its) >= 3 and len(set(its)) == len(its)


def test_epoch_of_counts_the_images_this_rank_has_trained_on():
    sampler = ResumableBatchSampler(10, 3, total_iters=20, seed=0, world_size=2)  # 5 a rank an epoch
    assert sampler.epoch_of(0) == 0.0
    assert sampler.epoch_of(5) == pytest.approx(3.0)  # 15 images
    assert sampler.epoch_of(20) == pytest.approx(12.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="empty"):
        ResumableBatchSampler(0, 2, total_iters=1)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        ResumableBatchSampler(4, 2, total_iters=1, rank=2, world_size=2)

import torch

from mrseg.model.sampler import BalancedSampler


def test_counts_and_membership():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 20 + [3] * 5)
    pos, neg = BalancedSampler(16, 0.25)(labels)
    assert int(pos.sum()) == 4 and int(neg.sum()) == 12
    assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()
    assert not (pos & neg).any()


def test_fills_with_negatives_when_positives_are_few():
    labels = torch.tensor([1, 1] + [0] * 50 + [-1] * 3)
    pos, neg = BalancedSampler(20, 0.5)(labels)
    assert int(pos.sum()) == 2 and int(neg.sum()) == 18


def test_never_samples_ignored_and_large_batch_keeps_everything():
    labels = torch.tensor([2, 0, -1, 0, 1, -1])
    pos, neg = BalancedSampler(10**9, 0.5)(labels)
    assert pos.tolist() == [True, False, False, False, True, False]
    assert neg.tolist() == [False, True, False, True, False, False]


def test_sampling_is_random():
    labels = torch.tensor([1] * 100 + [0] * 100)
    torch.manual_seed(1)
    a = BalancedSampler(10, 0.5)(labels)[0]
    b = BalancedSampler(10, 0.5)(labels)[0]
    assert not torch.equal(a, b)

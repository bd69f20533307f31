"""engine.train.trainer.sgd: torch's fused SGD where the device has it, the same update as the default."""

import torch

from mrseg.engine.train.trainer import sgd


def test_fused_on_the_cpu_and_the_same_update_as_the_default():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = sgd(a, lr=0.1, momentum=0.9, weight_decay=1e-4)
    plain = torch.optim.SGD(b, lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert fused.param_groups[0]["fused"] is True
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        assert not torch.equal(p, torch.zeros_like(p))


def test_falls_back_where_fused_is_refused(monkeypatch):
    calls = []
    real = torch.optim.SGD

    def only_plain(params, **kwargs):
        calls.append(kwargs.get("fused"))
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires params of supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", only_plain)
    opt = sgd([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert calls == [True, None] and isinstance(opt, real)

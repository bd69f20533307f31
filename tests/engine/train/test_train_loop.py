"""SimpleTrainer + hooks on a toy model: the step matches a hand-written torch loop, hooks run in order,
a stop request ends the run, the state of a resumed loop continues it exactly, a non-finite loss stops it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrseg.engine.train.loop import HookBase, SimpleTrainer, TrainError


class Toy(nn.Module):
    """forward(images, targets) -> {"loss_a": mse, "loss_b": l1} like MaskRCNN in training mode."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, images, targets):
        x = torch.stack(images)
        y = torch.stack([t["y"] for t in targets])
        pred = self.fc(x)
        return {"loss_a": ((pred - y) ** 2).mean(), "loss_b": (pred - y).abs().mean()}


def _batches(n: int) -> list:
    g = torch.Generator().manual_seed(1)
    return [
        (
            [torch.randn(3, generator=g) for _ in range(2)],
            [{"y": torch.randn(1, generator=g)} for _ in range(2)],
        )
        for _ in range(n)
    ]


class _Losses(HookBase):
    """Records each step's losses and lr."""

    def __init__(self):
        self.seen = []

    def after_step(self):
        self.seen.append(dict(self.trainer.losses, loss=self.trainer.loss, lr=self.trainer.lr))


def _trainer(model: nn.Module, batches: list, max_iter: int, clip: float | None = None) -> SimpleTrainer:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 ** (it // 2))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return SimpleTrainer(
        model, batches, opt, sched, scaler, device=torch.device("cpu"), max_iter=max_iter, clip_grad=clip
    )


def test_steps_match_a_plain_torch_loop():
    torch.manual_seed(0)
    model, batches = Toy(), _batches(5)
    reference = Toy()
    reference.load_state_dict(model.state_dict())
    _trainer(model, batches, 5, clip=0.5).train()
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 ** (it // 2))
    for images, targets in batches:
        loss = sum(reference(images, targets).values())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        opt.step()
        sched.step()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


class Recorder(HookBase):
    def __init__(self, name: str, events: list, stop_at: int | None = None):
        self.name, self.events, self.stop_at, self.seen = name, events, stop_at, 0

    def before_train(self):
        self.events.append((self.name, "before_train"))

    def after_step(self):
        self.events.append((self.name, self.trainer.iter))
        if self.trainer.iter == self.stop_at:
            self.trainer.stop_requested = True

    def after_train(self):
        self.events.append((self.name, "after_train"))

    def state_dict(self):
        return {f"seen_{self.name}": self.trainer.iter}

    def load_state_dict(self, state):
        self.seen = state[f"seen_{self.name}"]


def test_hooks_run_in_order_and_a_stop_request_ends_the_run():
    events: list = []
    trainer = _trainer(Toy(), _batches(4), 4)
    trainer.register_hooks([Recorder("a", events, stop_at=2), Recorder("b", events)])
    trainer.train()
    assert events == [
        ("a", "before_train"),
        ("b", "before_train"),
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", "after_train"),
        ("b", "after_train"),
    ]
    assert trainer.iter == 2 and trainer.stop_requested
    state = trainer.state_dict()
    assert state["iteration"] == 2 and state["seen_a"] == state["seen_b"] == 2
    assert set(trainer.losses) == {"loss_a", "loss_b"}
    assert trainer.loss == pytest.approx(sum(trainer.losses.values()), rel=1e-6)


def test_resumed_state_continues_exactly():
    torch.manual_seed(0)
    straight, batches = Toy(), _batches(4)
    start = {k: v.clone() for k, v in straight.state_dict().items()}
    _trainer(straight, batches, 4).train()

    first = Toy()
    first.load_state_dict(start)
    half = _trainer(first, batches[:2], 4)
    half.register_hooks([Recorder("a", [], stop_at=2)])
    half.train()
    saved = {"model": {k: v.clone() for k, v in first.state_dict().items()}, **half.state_dict()}

    second = Toy()
    second.load_state_dict(saved["model"])
    rest = _trainer(second, batches[2:], 4)
    hook = Recorder("a", [])
    rest.register_hooks([hook])
    rest.load_state_dict(saved)
    assert rest.start_iter == rest.iter == 2 and hook.seen == 2
    rest.train()
    assert rest.iter == 4
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key], value)


def test_a_non_finite_loss_stops_with_advice():
    model = Toy()
    batches = _batches(1)
    batches[0][1][0]["y"] = torch.tensor([float("nan")])
    with pytest.raises(TrainError, match="at iteration 1 .*lower --lr"):
        _trainer(model, batches, 1).train()


# --- the hooks of mrseg.engine.train.hooks on the toy loop ---


def test_signal_stops_after_the_step_and_last_pt_holds_that_step(tmp_path):
    import os
    import signal

    from mrseg.engine.distributed import Rank
    from mrseg.engine.progress import ProgressBar
    from mrseg.engine.train.hooks import PeriodicCheckpoint, StepCallback, StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    trainer = _trainer(Toy(), _batches(5), 5)
    quiet = ProgressBar("train", 5, quiet=True)
    trainer.register_hooks(
        [
            StepCallback(lambda it: os.kill(os.getpid(), signal.SIGTERM) if it == 2 else None),
            StopOnSignal(Rank()),
            PeriodicCheckpoint(
                tmp_path / "last.pt",
                period=4,
                is_main=True,
                describe=lambda: {"model": "toy"},
                progress=quiet,
            ),
        ]
    )
    trainer.train()
    assert trainer.iter == 2 and trainer.stop_requested
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["iteration"] == 2 and saved["model"] == "toy" and "optimizer" in saved
    assert signal.getsignal(signal.SIGTERM) == before  # handlers given back


def test_metrics_records_average_the_steps_since_the_last_record(tmp_path, capsys):
    import json

    from mrseg.engine.distributed import Rank
    from mrseg.engine.progress import ProgressBar
    from mrseg.engine.train.hooks import MetricsWriter
    from mrseg.engine.train.metrics import MetricsLog

    log, losses = MetricsLog(tmp_path / "metrics.jsonl"), _Losses()
    trainer = _trainer(Toy(), _batches(5), 5)
    trainer.register_hooks(
        [
            losses,
            MetricsWriter(
                log, ProgressBar("train", 5), rank=Rank(), period=2, batch=2, epoch_of=lambda it: it / 4
            ),
        ]
    )
    trainer.train()
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [2, 4, 5]  # every 2 and the last
    for record, steps in zip(records, ([0, 1], [2, 3], [4]), strict=True):
        for key in ("loss_a", "loss_b", "loss"):
            assert record[key] == pytest.approx(
                sum(losses.seen[i][key] for i in steps) / len(steps), abs=1e-6
            )
        assert record["lr"] == losses.seen[steps[-1]]["lr"] and record["epoch"] == record["iter"] / 4
        assert record["sec_per_iter"] > 0 and record["images_per_sec"] > 0
    # not a terminal: no bar, a plain log line per record instead
    lines = capsys.readouterr().err.splitlines()
    expected = [f"iter {r['iter']}/5 loss {r['loss']:.3f}" for r in records]
    assert [line.split(" lr ")[0] for line in lines] == expected
    assert all(" s/it " in line and " img/s ETA " in line for line in lines)
    assert lines[-1].endswith("ETA 0:00")


def test_on_a_terminal_the_bar_shows_the_loss_and_pace_of_the_last_steps(terminal, capsys):
    from mrseg.engine.distributed import Rank
    from mrseg.engine.progress import ProgressBar
    from mrseg.engine.train.hooks import MetricsWriter
    from tests.engine.conftest import strip_ansi

    losses, trainer = _Losses(), _trainer(Toy(), _batches(5), 5)
    with ProgressBar("train", 5, "bar", "count", "{info}", info="") as bar:
        writer = MetricsWriter(None, bar, rank=Rank(), period=2, batch=2, epoch_of=float, window=2)
        trainer.register_hooks([losses, writer])
        trainer.train()
    lines = strip_ansi(capsys.readouterr().err).strip().splitlines()
    recent = (losses.seen[3]["loss"] + losses.seen[4]["loss"]) / 2  # the window: the last 2 steps
    assert f" 5/5 loss {recent:.3f}  " in lines[-1] and lines[-1].endswith(" s/it  ETA 0:00")
    assert not any(line.startswith("iter ") for line in lines)  # the bar replaces the log lines

"""The training loop as a small loop plus hooks (the shape of detectron2's `SimpleTrainer` + `HookBase`).

`SimpleTrainer.train()` runs iterations `start_iter + 1 .. max_iter`; one step (`run_step`) is: next batch ->
losses -> backward -> optimizer, AMP scaler and lr scheduler step. Everything else a run does (metrics,
evaluation, checkpoints, signals) is a hook (see mrseg.engine.train.hooks), called in registration order:

    before_train()                      once, before the first step
    before_step() run_step() after_step()   per iteration; `trainer.iter` is the number of steps done
    after_train()                       once, also when a step or hook raised

A hook sets `trainer.stop_requested` to end the run after the current step (the run counts as interrupted).
`trainer.state_dict()` is what resume restores: iteration, optimizer, scheduler, scaler, plus every hook's
own `state_dict()` merged in (their keys are top-level keys of the checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scales the gradients of `params` so that their total L2 norm is at most `max_norm` (what
    torch.nn.utils.clip_grad_norm_ does); returns the total norm before clipping.

    clip_grad_norm_ multiplies every gradient by min(1, max_norm / (norm + 1e-6)), a read and a write of all
    of them, even when that factor is 1. On the CPU, where reading the factor back costs nothing, the
    multiplication runs only when the factor is below 1 (multiplying by exactly 1 changes no bit). On an
    accelerator that read would be a host sync, so there it always runs.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # clip_grad_norm_'s own arithmetic
    if norm.device.type != "cpu" or not factor.item() == 1.0:  # NaN: scale, as clip_grad_norm_ would
        torch._foreach_mul_(grads, factor)
    return norm


class TrainError(ValueError):
    """A training run that cannot start or go on; the message says what is wrong and what to do."""


class HookBase:
    """A piece of a run that acts around the steps; `self.trainer` is set when it is registered."""

    trainer: SimpleTrainer

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        """Top-level checkpoint entries this hook needs to resume exactly ({} if none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Takes back what `state_dict` saved, from a whole checkpoint dict."""


class SimpleTrainer:
    """Runs `model` (in train mode it returns a dict of losses) on `loader`'s batches: SGD-like `optimizer`,
    LambdaLR-like `scheduler` stepped per iteration, `scaler` (a GradScaler, disabled without AMP).

    loader: yields (images: list of float [3, H, W], targets: list of dicts of tensors), max_iter - start_iter
    batches. amp: autocast to float16 on `device`. clip_grad: max gradient norm over `params`, or None.
    After a step: `iter`, `losses` {name: float} and `loss` (their sum) of that step, `lr` it used.
    """

    def __init__(
        self, model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, *,
        device: torch.device, max_iter: int, amp: bool = False, clip_grad: float | None = None,
    ):  # fmt: skip
        self.model = model
        self.loader = loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.device = device
        self.amp = amp
        self.clip_grad = clip_grad
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.start_iter = self.iter = 0
        self.max_iter = max_iter
        self.hooks: list[HookBase] = []
        self.losses: dict[str, float] = {}
        self.loss = self.lr = float("nan")
        self.stop_requested = False
        self._data = None

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def state_dict(self) -> dict:
        state = {
            "iteration": self.iter,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        for hook in self.hooks:
            state.update(hook.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` saved (the scaler only when AMP is on and it was saved)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter = self.iter = int(state["iteration"])
        for hook in self.hooks:
            hook.load_state_dict(state)

    def train(self) -> None:
        self.model.train()
        try:
            for hook in self.hooks:
                hook.before_train()
            self._data = iter(self.loader)
            while self.iter < self.max_iter and not self.stop_requested:
                for hook in self.hooks:
                    hook.before_step()
                self.run_step()
                for hook in self.hooks:
                    hook.after_step()
        finally:
            self._data = None  # lets DataLoader workers go
            for hook in self.hooks:
                hook.after_train()

    def run_step(self, batch: tuple | None = None) -> None:
        """One iteration on `batch` (images, targets), by default the loader's next one."""
        images, targets = next(self._data) if batch is None else batch
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise TrainError(
                f"the loss became {loss.item()} at iteration {self.iter + 1} "
                f"({', '.join(f'{k} {v.item():.4g}' for k, v in losses.items())}); lower --lr, add "
                "--clip-grad 10, or lengthen the warmup"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iter += 1
        self.losses = {k: float(v.detach()) for k, v in losses.items()}
        self.loss = float(loss.detach())

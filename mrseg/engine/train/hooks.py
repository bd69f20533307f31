"""The hooks of `mrseg train` (see mrseg.engine.train.loop for when hooks run). `mrseg.engine.train.trainer`
registers them in this order, which is the order they act after each step:

MetricsWriter -> PeriodicEval -> StepCallback -> StopOnSignal -> RngState -> PeriodicCheckpoint.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mrseg.data.coco import CocoDataset
from mrseg.engine.distributed import Rank
from mrseg.engine.progress import ProgressBar, Window, eta
from mrseg.engine.train.checkpoint import rng_state, save_atomic, set_rng_state
from mrseg.engine.train.loop import HookBase
from mrseg.engine.train.metrics import MetricsLog, memory_mb
from mrseg.engine.train.validation import METRIC_NAMES, validate


def _due(iteration: int, period: int, last: int) -> bool:
    return iteration % period == 0 or iteration == last


class MetricsWriter(HookBase):
    """Every `period` iterations and at the last: the mean losses since the previous record (averaged over
    processes), lr, s/iter and images/s of the steps themselves (evaluation and checkpoint time left out),
    memory -> a "train" record in metrics.jsonl (`log`, main process only) and, without a drawn bar, a log
    line with the ETA; the bar (loss and s/iteration over the last `window` steps, the ETA at that pace)
    advances after every step. epoch_of(iteration) -> epoch as a float; batch: images per step, all processes.
    """

    def __init__(self, log: MetricsLog | None, progress: ProgressBar, *, rank: Rank, period: int, batch: int,
                 epoch_of: Callable[[int], float], window: int = 20):  # fmt: skip
        self.log, self.progress, self.rank, self.period = log, progress, rank, period
        self.batch, self.epoch_of = batch, epoch_of
        self.pace, self.recent_loss = Window(window), Window(window)
        self._reset()

    def _reset(self) -> None:
        self.sums: Counter[str] = Counter()
        self.count, self.seconds = 0, 0.0

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        seconds = time.perf_counter() - self._t0
        self.seconds += seconds
        self.sums.update({**t.losses, "loss": t.loss})
        self.count += 1
        self.pace.add(seconds)
        self.recent_loss.add(t.loss)
        self.progress.update(
            t.iter, info=f"loss {self.recent_loss.mean:.3f}  {self.pace.mean:.3f} s/it  ETA {self._eta()}"
        )
        if _due(t.iter, self.period, t.max_iter):
            means = self.rank.all_reduce_mean({k: v / self.count for k, v in self.sums.items()}, t.device)
            record = {
                "type": "train",
                "iter": t.iter,
                "epoch": round(self.epoch_of(t.iter), 4),
                "lr": t.lr,
                **{k: round(v, 6) for k, v in means.items()},
                "sec_per_iter": round(self.seconds / self.count, 4),
                "images_per_sec": round(self.count * self.batch / max(self.seconds, 1e-9), 3),
                "memory_mb": round(memory_mb(t.device), 1),
            }
            if not self.progress.live:
                self.progress.say(
                    f"iter {t.iter}/{t.max_iter} loss {means['loss']:.3f} lr {t.lr:.4g} "
                    f"{record['sec_per_iter']:.3f} s/it {record['images_per_sec']:.1f} img/s "
                    f"ETA {self._eta()}"
                )
            if self.log is not None:
                self.log.write(record)
            self._reset()

    def _eta(self) -> str:
        return eta(self.pace.mean, self.trainer.max_iter - self.trainer.iter)


class PeriodicEval(HookBase):
    """Every `period` iterations and at the last (when there is a validation set): on the main process,
    validates `model` (the AP of each of `iou_types`), writes an "eval" record to metrics.jsonl, and when the
    AP of the last of `iou_types` (`validation_types`) beats the best so far writes `describe()` (the model
    checkpoint, no training state) to `best_path`; all processes wait for it. State: best_ap."""

    def __init__(self, model: nn.Module, val_set: CocoDataset | None, *, period: int, rank: Rank,
                 log: MetricsLog | None, progress: ProgressBar, best_path: Path, describe: Callable[[], dict],
                 iou_types: tuple[str, ...] = ("bbox", "segm")):  # fmt: skip
        self.model, self.val_set, self.period, self.rank = model, val_set, period, rank
        self.iou_types = iou_types
        self.log, self.progress, self.best_path, self.describe = log, progress, best_path, describe
        self.best_ap: float | None = None
        self.last_eval: dict = {}

    def state_dict(self) -> dict:
        return {"best_ap": self.best_ap}

    def load_state_dict(self, state: dict) -> None:
        self.best_ap = state.get("best_ap")

    def after_step(self) -> None:
        t = self.trainer
        if self.val_set is None or not _due(t.iter, self.period, t.max_iter):
            return
        if self.rank.is_main:
            self.last_eval = validate(self.model, self.val_set, t.device, iou_types=self.iou_types)
            scored = [k for k in self.iou_types if k in self.last_eval]  # pycocotools may skip a type
            ap = self.last_eval[scored[-1]]["AP"]
            self.log.write({"type": "eval", "iter": t.iter, **self.last_eval})
            scores = ", ".join(f"{METRIC_NAMES[k]} {self.last_eval[k]['AP']:.4f}" for k in scored[::-1])
            self.progress.say(f"eval at iter {t.iter}: {scores}")
            if self.best_ap is None or ap > self.best_ap:
                self.best_ap = ap
                save_atomic({**self.describe(), **self.state_dict()}, self.best_path)
        self.rank.barrier()


class StepCallback(HookBase):
    """Calls `fn(iteration)` after each step (a caller's own logging, or a test raising a signal)."""

    def __init__(self, fn: Callable[[int], None]):
        self.fn = fn

    def after_step(self) -> None:
        self.fn(self.trainer.iter)


class StopOnSignal(HookBase):
    """From before_train to after_train, SIGINT/SIGTERM only set a flag (a second Ctrl-C stops at once);
    after each step, if any process got one, `trainer.stop_requested` is set, so the checkpoint hook saves
    last.pt and the loop ends. Outside the main thread signals are left alone."""

    def __init__(self, rank: Rank):
        self.rank = rank
        self.signum: int | None = None
        self._previous: dict = {}

    def before_train(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def after_step(self) -> None:
        if self.rank.any_rank(self.signum is not None, self.trainer.device):
            self.trainer.stop_requested = True

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class RngState(HookBase):
    """Puts every process's RNG states (torch, CUDA, numpy, python) in the checkpoint as rng (rank 0's) and
    rng_per_rank, and on resume sets them back before the first step, so the resumed run draws what the
    uninterrupted one would. With another number of processes it reseeds from `seed` and the iteration (the
    data order is kept, the weights are not bit-identical) and says so. state_dict is collective: every
    process calls it."""

    def __init__(self, rank: Rank, seed: int, progress: ProgressBar):
        self.rank, self.seed, self.progress = rank, seed, progress
        self._saved: list | None = None

    def state_dict(self) -> dict:
        states = self.rank.gather(rng_state())
        return {"rng": states[0], "rng_per_rank": states}

    def load_state_dict(self, state: dict) -> None:
        self._saved = state.get("rng_per_rank") or [state["rng"]]

    def before_train(self) -> None:
        if self._saved is None:
            return
        if len(self._saved) == self.rank.world:
            set_rng_state(self._saved[self.rank.rank])
        else:
            torch.manual_seed(self.seed + self.trainer.start_iter * 7919 + self.rank.rank)
            self.progress.say(
                f"resume: the run had {len(self._saved)} processes, now {self.rank.world}; the RNG is "
                "reseeded (the data order is kept, but the result will not be bit-identical)"
            )
        self._saved = None


class PeriodicCheckpoint(HookBase):
    """Every `period` iterations, at the last, and when a stop was requested: `describe()` (the model
    checkpoint) plus `trainer.state_dict()` (training state, every hook's state) -> `path` (last.pt), written
    atomically by the main process (every process takes part in gathering the state). After a stop it says
    how to go on."""

    def __init__(
        self, path: Path, *, period: int, is_main: bool, describe: Callable[[], dict], progress: ProgressBar
    ):
        self.path, self.period, self.is_main = path, period, is_main
        self.describe, self.progress = describe, progress

    def after_step(self) -> None:
        t = self.trainer
        if not (_due(t.iter, self.period, t.max_iter) or t.stop_requested):
            return
        state = t.state_dict()
        if self.is_main:
            save_atomic({**self.describe(), **state}, self.path)
        if t.stop_requested:
            self.progress.say(
                f"stopped by a signal at iteration {t.iter}/{t.max_iter}; {self.path} saved: continue with "
                "--resume"
            )

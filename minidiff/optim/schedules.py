"""Learning-rate schedules: they set each parameter group's ``lr`` from its initial value and an epoch count.

Call ``scheduler.step()`` once per epoch (or per step, as you choose), after ``optimizer.step()``.  Each
schedule is a closed form of the count ``last_epoch`` and the groups' initial rates ``base_lrs``, so a
schedule restored from :meth:`LRScheduler.state_dict` continues exactly.

>>> import minidiff as md
>>> from minidiff.optim import SGD, StepLR
>>> opt = SGD([md.zeros(1, requires_grad=True)], lr=1.0)
>>> sched = StepLR(opt, step_size=2, gamma=0.5)
>>> lrs = []
>>> for _ in range(5):
...     lrs.append(opt.param_groups[0]["lr"])
...     sched.step()
>>> lrs
[1.0, 1.0, 0.5, 0.5, 0.25]
"""

from __future__ import annotations

import math

from ..errors import check_number
from .base import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR"]


class LRScheduler:
    """Base class: ``lr_at(base_lr, epoch)`` gives a group's rate; ``step()`` advances the count."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected a minidiff.optim.Optimizer, got {type(optimizer).__name__}")
        if "lr" not in optimizer.param_groups[0]:
            raise TypeError(f"{name}: {type(optimizer).__name__} has no 'lr' setting to schedule")
        self.optimizer = optimizer
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise ValueError(f"{name}: resuming at last_epoch={last_epoch} needs 'initial_lr' in every group")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set every group's ``lr``."""
        self.last_epoch += 1
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(base, self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """The rates the last :meth:`step` set, one per group."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything but the optimizer (``last_epoch``, ``base_lrs``, the settings)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the optimizer's own ``lr`` values come from its ``load_state_dict``."""
        if len(state.get("base_lrs", ())) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: saved for {len(state.get('base_lrs', ()))} "
                f"groups, the optimizer has {len(self.optimizer.param_groups)}"
            )
        self.__dict__.update(state)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = base

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.get_last_lr()})"


class StepLR(LRScheduler):
    """``lr = base_lr · γ^⌊epoch / step_size⌋`` (γ = 0.1: the GC paper's ×0.1 every 60 epochs).

    >>> import minidiff as md
    >>> opt = md.optim.SGD([md.zeros(1, requires_grad=True)], lr=0.1)
    >>> sched = StepLR(opt, step_size=60)
    >>> for _ in range(60): sched.step()
    >>> round(opt.param_groups[0]["lr"], 12)
    0.01
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        check_number("StepLR", "step_size", step_size, low=1, integer=True)
        check_number("StepLR", "gamma", gamma, low=0, low_open=True)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = base_lr · γ^epoch``.

    >>> import minidiff as md
    >>> opt = md.optim.SGD([md.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = ExponentialLR(opt, gamma=0.5); sched.step(); sched.step()
    >>> sched.get_last_lr()
    [0.25]
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        check_number("ExponentialLR", "gamma", gamma, low=0, low_open=True)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = η_min + (base_lr − η_min)(1 + cos(π·epoch/T_max))/2`` (SGDR without restarts).

    Beyond ``T_max`` the cosine continues (the rate rises again), as in PyTorch's closed form.

    >>> import minidiff as md
    >>> opt = md.optim.SGD([md.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    >>> sched.step(); sched.step()
    >>> round(sched.get_last_lr()[0], 12)  # half way: half the rate
    0.5
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        check_number("CosineAnnealingLR", "T_max", T_max, low=1, integer=True)
        check_number("CosineAnnealingLR", "eta_min", eta_min, low=0)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2

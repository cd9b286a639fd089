"""Optimizers on minidiff's tape leaves: the familiar ``opt.zero_grad(); loss.backward(); opt.step()``.

* :mod:`.base` — :class:`Optimizer` (parameter groups, ``step(closure)``, ``state_dict``);
* :mod:`.first_order` — :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`Adagrad`, :class:`RMSprop`,
  each with Gradient Centralization (:mod:`.centralization`);
* :mod:`.lbfgs` — :class:`LBFGS` (two-loop recursion, strong-Wolfe line search);
* :mod:`.dense` — :class:`BFGS`, :class:`DFP`, :class:`SR1`, :class:`Newton` (dense matrices, small problems);
* :mod:`.newton_cg` — :class:`NewtonCG` (truncated Newton: Hessian-vector products and CG);
* :mod:`.fgd` — :class:`FGD`, forward gradient descent through this API;
* :mod:`.kfac` — :class:`KFAC` (Kronecker-factored natural gradient through the model's hooks);
* :mod:`.shampoo` — :class:`Shampoo` (one preconditioner per tensor axis, grafting);
* :mod:`.adahessian` — :class:`AdaHessian` (Hutchinson Hessian diagonal from HVPs);
* :mod:`.sophia` — :class:`Sophia` (clipped diagonal-curvature steps, Hutchinson or Gauss-Newton-Bartlett);
* :mod:`.natural_gradient` — :class:`NaturalGradient` (CG on Fisher-vector products, LM damping);
* :mod:`.hessian_free` — :class:`HessianFree` (Martens 2010: CG on damped Gauss-Newton products);
* :mod:`.levenberg_marquardt` — :class:`LevenbergMarquardt` (least squares, ``JᵀJ`` via jvp/vjp);
* :mod:`.schedules` — :class:`StepLR`, :class:`ExponentialLR`, :class:`CosineAnnealingLR`.

See ``docs/optimizers.md``.

>>> import minidiff as md
>>> w = md.tensor([1.0, -2.0], requires_grad=True)
>>> opt = md.optim.Adam([w], lr=0.1)
>>> for _ in range(100):
...     opt.zero_grad()
...     loss = ((w - 3.0) ** 2).sum()
...     loss.backward()
...     _ = opt.step()
>>> [round(x, 1) for x in w.tolist()]
[3.0, 3.0]
"""

from .adahessian import AdaHessian  # noqa: F401
from .base import Optimizer  # noqa: F401
from .centralization import centralize  # noqa: F401
from .dense import BFGS, DFP, SR1, Newton  # noqa: F401
from .fgd import FGD  # noqa: F401
from .first_order import SGD, Adagrad, Adam, AdamW, RMSprop  # noqa: F401
from .hessian_free import HessianFree  # noqa: F401
from .kfac import KFAC  # noqa: F401
from .lbfgs import LBFGS  # noqa: F401
from .levenberg_marquardt import LevenbergMarquardt  # noqa: F401
from .natural_gradient import NaturalGradient  # noqa: F401
from .newton_cg import NewtonCG  # noqa: F401
from .schedules import CosineAnnealingLR, ExponentialLR, LRScheduler, StepLR  # noqa: F401
from .shampoo import Shampoo  # noqa: F401
from .sophia import Sophia  # noqa: F401

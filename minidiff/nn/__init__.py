"""Neural-network building blocks on minidiff's primitives.

* :mod:`minidiff.nn.functional` — stateless layers and losses (``linear``, ``conv2d``, ``cross_entropy``…);
* :mod:`minidiff.nn.modules` — layers holding their parameters as a pytree (:class:`Module`,
  :class:`Linear`, :class:`Conv2d`, :class:`MaxPool2d`, :class:`ReLU`, :class:`Flatten`,
  :class:`Sequential`), with a functional ``apply(params, x)``, the tape-style call and hooks;
* :mod:`minidiff.nn.init` — seeded initializers;
* :mod:`minidiff.nn.models` — the forward-gradient paper's models (``logreg``, ``mlp``, ``mlp_depth``, ``cnn``).
"""

from . import functional, init, models, modules
from .modules import Conv2d, Flatten, HookHandle, Linear, MaxPool2d, Module, ReLU, Sequential  # noqa: F401

#: the subpackages, and the layers of :mod:`minidiff.nn.modules` (its hook primitive stays there)
__all__ = [
    "functional",
    "init",
    "models",
    *(name for name in modules.__all__ if name != "backward_hook_point"),
]

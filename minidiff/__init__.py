"""minidiff: forward mode with dual numbers and reverse mode with a tape, side by side, on NumPy/CuPy.

>>> import minidiff as md
>>> f = lambda x: md.sin(x) * x
>>> x = md.tensor(1.0)
>>> round(md.grad(f)(x).item(), 6) == round(md.jvp(f, (x,), (md.tensor(1.0),))[1].item(), 6)
True
"""

from . import data, errors, nn, primitives, testing  # noqa: F401
from .modes import levels  # noqa: F401
from .tensor import pytree  # noqa: F401
from . import deer, optim  # noqa: F401
from .primitives import linalg, random  # noqa: F401
from .backend import (  # noqa: F401
    Device,
    bool_,
    cuda_available,
    cuda_unavailable_reason,
    float16,
    float32,
    float64,
    get_device,
    int8,
    int16,
    int32,
    int64,
    uint8,
)
from .primitives.creation import (
    arange,
    asarray,
    empty,
    eye,
    full,
    linspace,
    ones,
    ones_like,
    tensor,
    zeros,
    zeros_like,
)
from .primitives.custom import primitive
from .errors import (
    DeviceError,
    DTypeError,
    MinidiffError,
    ShapeError,
    TapeError,
    TracerError,
    UnsupportedError,
)
from .modes.forward import Dual, dual_level, make_dual, unpack_dual
from .transforms.forward_gradient import FGD, ForwardGradientWorkspace, forward_grad, sample_directions
from .transforms.inspect_tape import format_tape
from .primitives.ops import *  # noqa: F403 - the array functions, primitives/ops.py's __all__
from .primitives.ops import all, any, max, min, sum  # noqa: A004 - NumPy's names on purpose
from .modes import tensor_methods as _tensor_methods  # noqa: F401 - attaches the operators on import
from .tensor.kernel import array_kernel, array_namespace
from .modes.reverse import assign_, is_grad_enabled, no_grad, tape_stats
from .tensor.core import Tensor
from .transforms.core import grad, hessian, hvp, jacfwd, jacrev, jvp, value_and_grad, vjp, vmap
from .transforms.checkpoint import checkpoint
from .transforms.linearize import linearize

from .primitives import ops as _ops

__version__ = "0.1.0"

#: The public API (design.md's contract): the array functions of primitives/ops.py, then the rest.
__all__ = [
    *_ops.__all__,
    # creation and devices
    *("arange", "asarray", "empty", "eye", "full", "linspace", "ones", "ones_like", "tensor", "zeros"),
    *("zeros_like", "Device", "get_device", "cuda_available", "cuda_unavailable_reason"),
    *("bool_", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"),
    # the array type, its kernels, in-place updates, errors
    *("Tensor", "array_kernel", "array_namespace", "assign_"),
    *("MinidiffError", "DeviceError", "DTypeError", "ShapeError", "TapeError", "TracerError"),
    "UnsupportedError",
    # transforms, forward-mode and tape-style tools
    *("jvp", "vjp", "grad", "value_and_grad", "jacfwd", "jacrev", "hessian", "hvp", "vmap"),
    *(
        "checkpoint",
        "linearize",
        "primitive",
        "forward_grad",
        "sample_directions",
        "FGD",
        "ForwardGradientWorkspace",
    ),
    *("Dual", "dual_level", "make_dual", "unpack_dual"),
    *("no_grad", "is_grad_enabled", "tape_stats", "format_tape"),
    # submodules
    *("linalg", "random", "nn", "optim", "deer", "curvature", "data", "testing", "pytree", "errors"),
    *("primitives", "transforms", "levels"),
]


def __getattr__(name: str):
    """``md.curvature`` loads on first use: its SciPy operators cost ~0.3 s to import."""
    if name == "curvature":
        import importlib

        return importlib.import_module(".curvature", __name__)
    raise AttributeError(f"module 'minidiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"curvature"})

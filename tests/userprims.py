"""User primitives shared by the tests of ``md.testing`` (check_grads, the battery): correct, or with a
deliberately wrong rule."""

from __future__ import annotations

import minidiff as md


def make_softplus(jvp_factor=1.0, vjp_factor=1.0, detach=(), name="softplus"):
    """softplus as a user primitive; ``detach`` names the rules whose derivative sees a detached
    input (right at first order, wrong one order up)."""

    @md.primitive(name=name)
    def softplus(x):
        return md.log1p(md.exp(x))

    def slope(x, rule):
        return md.sigmoid(md.stop_gradient(x) if rule in detach else x)

    @softplus.defjvp
    def softplus_jvp(primals, tangents):
        return tangents[0] * slope(primals[0], "jvp") * jvp_factor

    @softplus.defvjp
    def softplus_vjp(cotangent, output, x):
        return (cotangent * slope(x, "vjp") * vjp_factor,)

    return softplus

"""The two AD modes and their machinery: levels, dual numbers (forward), the tape (reverse), vmap.

* :mod:`~minidiff.modes.levels`: one level per transform call, so nested transforms never mix;
* :mod:`~minidiff.modes.forward`: dual numbers, pushed through each primitive's JVP rule;
* :mod:`~minidiff.modes.reverse`: the tape, walked backward through each primitive's VJP rule;
* :mod:`~minidiff.modes.batching`: ``vmap``'s batch tracer (vector-mode forward passes);
* :mod:`~minidiff.modes.tensor_methods`: a tensor's operators and methods, attached in one place.
"""

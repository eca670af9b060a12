"""Unit discovery: the homogeneous unit groups of any JAX model, from its trace.

``graph`` (trace to a flat jaxpr) -> ``labels`` (index tracking through layout
ops) -> ``rules`` (positive homogeneity, one candidate at a time) ->
``infer`` (the Slice of each leaf) -> ``chains`` (where balancing is exact)
-> ``discover`` (choose disjoint groups, findings); ``verify`` checks any spec
numerically; ``primitives`` is the one table of what each JAX primitive does.
The entry points are :func:`pathprox_jax.discover`,
:func:`pathprox_jax.discover_module` and :func:`pathprox_jax.verify_units`.
"""

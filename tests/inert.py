"""Which parameters a network's output does not depend on."""
import jax
import numpy as np


def inert_biases(model, params, x):
    """Paths of biases the network's output does not depend on (a conv bias before instance norm).

    Their true gradient is zero, so Adam turns round-off into +-lr steps of random sign: they
    differ between any two summation orders, in torch as here, without changing the function.
    """
    apply = jax.jit(lambda p: model.apply({"params": p}, x, train=True))
    base = apply(params)
    inert = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key != "bias":
            continue
        bumped = jax.tree_util.tree_map_with_path(lambda q, v: v + 1.0 if q == path else v, params)
        if float(np.max(np.abs(apply(bumped) - base))) < 1e-4:
            inert.add(jax.tree_util.keystr(path))
    return inert

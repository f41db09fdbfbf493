"""Which parameters a network's output does not depend on, and the round-off their gradients carry."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclejax.layers import InstanceNorm
from cyclejax.train_step import NetworkApplier

# A conv bias before instance norm has a true gradient of zero; what is computed is round-off.
# Each element of the gradient that reaches such a bias, (dL/dy - mean(dL/dy) - y * mean(dL/dy * y)) / sigma
# with y normalised, carries a few roundings of terms each at most |dL/dy| / sigma times (1 + max |y|):
# 8 eps of sum |dL/dy| / sigma covers that. Measured here (AMD EPYC, 2026-11-28): at most 0.92 eps.
ROUNDOFF_EPS = 8


@functools.cache
def forward(model):
    """`model`'s training-mode output as a jitted function of (params, x), one per network in a
    process (G_A and G_B are one network where the options make them equal)."""
    return jax.jit(lambda p, x: model.apply({"params": p}, x, train=True))


def inert_biases(model, params, x):
    """Paths of biases the network's output does not depend on (a conv bias before instance norm).

    Their true gradient is zero, so Adam turns round-off into +-lr steps of random sign: they
    differ between any two summation orders, in torch as here, without changing the function.
    """
    apply = forward(model)
    base = apply(params, x)
    inert = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key != "bias":
            continue
        bumped = jax.tree_util.tree_map_with_path(lambda q, v: v + 1.0 if q == path else v, params)
        if float(np.max(np.abs(apply(bumped, x) - base))) < 1e-4:
            inert.add(jax.tree_util.keystr(path))
    return inert


class NamingApplier(NetworkApplier):
    """A `NetworkApplier` that says which network it is applying, while it does (`NamingApplier.current`)."""

    current = None
    nested = False  # the networks traced inline, where `instance_norm_roundoff`'s interceptor sees them

    def _named(self, apply, name, params, x):
        previous, NamingApplier.current = NamingApplier.current, name
        try:
            return apply(name, params, x)
        finally:
            NamingApplier.current = previous

    def __call__(self, name, params, x):
        return self._named(super().__call__, name, params, x)

    def without_stats(self, name, params, x):
        return self._named(super().without_stats, name, params, x)


def _bias_before(norm_path):
    """The conv bias that feeds the norm at `norm_path`: ('model_10', 'conv_block_2') -> 'model_10/conv_block_1/bias'
    (the official layout: a conv, then its norm at the next index)."""
    prefix, _, index = norm_path[-1].rpartition("_")
    return "/".join((*norm_path[:-1], f"{prefix}_{int(index) - 1}", "bias"))


def instance_norm_roundoff(objective, nets):
    """The scale of the round-off that is the gradient of a conv bias before instance norm.

    Returns `scales(*args)`: for each such bias of the networks `nets`, the sum over calls and
    pixels of |dL/dz| / sigma per channel, z the norm's output and sigma its input's deviation,
    L = objective(*args), computed with `NamingApplier`s. The JAX form of tests/test_train_step.py's
    `_watch_instance_norms` (which watches the torch reference): such a bias's true gradient is
    zero, and what is computed is round-off of at most ROUNDOFF_EPS float32 eps of this sum. The
    gradient that reaches each norm's output is read as that of a zero added to it.
    Returns {net: {'path/to/bias': (channels,) float64}}.
    """
    calls, shapes = [], []

    def loss_with(added, *args):
        sigmas = []
        calls.clear()
        shapes.clear()

        def interceptor(next_fun, a, kw, context):
            z = next_fun(*a, **kw)
            if (isinstance(context.module, InstanceNorm) and context.method_name == "__call__"
                    and NamingApplier.current in nets):
                x = jax.lax.stop_gradient(a[0]).astype(jnp.float32)
                sigmas.append(jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + 1e-5))
                calls.append((NamingApplier.current, _bias_before(context.module.path)))
                shapes.append(jax.ShapeDtypeStruct(z.shape, z.dtype))
                if added is not None:
                    z = z + added[len(sigmas) - 1]
            return z

        with nn.intercept_methods(interceptor):
            return objective(*args), sigmas

    grad = jax.jit(jax.grad(loss_with, has_aux=True))

    def scales(*args):
        jax.eval_shape(lambda *a: loss_with(None, *a), *args)
        zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
        grads, sigmas = grad(zeros, *args)
        out = {name: {} for name in nets}
        for (name, bias), g, sigma in zip(calls, grads, sigmas):
            s = (np.abs(np.asarray(g, np.float64)) / np.asarray(sigma, np.float64)).sum(axis=(0, 1, 2))
            out[name][bias] = out[name].get(bias, 0.0) + s
        return out

    return scales

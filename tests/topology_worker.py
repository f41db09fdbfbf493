"""Run in subprocesses: one train step from the same state and batch on several topologies, every
intermediate kept (tests/test_topology.py).

    python -m tests.topology_worker OUT        # 1 process: the 1-device references -> OUT/single.json
    python -m tests.topology_worker OUT --process_id=I --num_processes=2 --coordinator_address=HOST:PORT
        # one of 2 processes, 2 devices each, vs the 1-device results the first command left in OUT
        # -> OUT/multi.json
    python -m tests.topology_worker OUT --eight_devices  # and 8 devices vs 1 in that process
    python -m tests.topology_worker OUT --first_round   # the first round's two-step test, taken apart

The step is `train_step.step_with_intermediates`, compiled with the production step's shardings
(state replicated, batch split over `data`), with the random bits it draws brought out: each
dropout mask (a Flax interceptor runs each dropout once more on ones, with the same key) and
each penalty's alphas (the penalty runs once more on real = 1, fake = 0, whose mix is alpha).
Each kink of the step (ReLU, leaky ReLU, |.| in L1) reports its input and branch, and can be
pinned to the branch another run took.
"""
import hashlib
import json
import os
import pickle
import sys
import time

# Devices per process in the 2-process run. Every collective of the step (528 all-reduces with
# batch norm: its statistics over the global batch, layer by layer) waits on each process's
# device threads and on gloo: on the 2-core VM, one all-reduce between 2 processes took about
# twice as long with 4 devices a process (8 device threads on 2 cores) as with 2
# (experiments/bench/allreduce_latency_2026-12-06.txt: 9.0-12.2 ms against 4.2-5.3), and the
# 2-process run took 80 s alone with 4 devices a process, 67 s with 2.
MULTI_DEVICES = 2

if __name__ == "__main__" and "device_count" not in os.environ.get("XLA_FLAGS", ""):
    assert "jax" not in sys.modules
    _DEVICES = MULTI_DEVICES if any(a.startswith("--process_id") for a in sys.argv) else 8
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_DEVICES}"

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import serialize_executable  # noqa: E402

from cyclejax import losses, parallel, train_state, train_step  # noqa: E402
from cyclejax import model as model_lib  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.onednn_calls import onednn_call_rows  # noqa: E402
from tests.inert import ROUNDOFF_EPS, NamingApplier, instance_norm_roundoff  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
SHAPE = (32, 32, 3)
LATER = 20  # steps on one device to the later state
# The official options (lsgan, instance norm, no dropout), and the other random streams and
# reductions: dropout masks, the penalty's alphas, batch statistics over the global batch.
CASES = {"official": {}, "dropout_wgangp_batchnorm": dict(no_dropout=False, gan_mode="wgangp", norm="batch")}
# The case the tests run, in 2 processes against 1 device: every collective and random stream of
# the step. The official options on 8 devices against 1 are tests/test_parallel.py's (in float32
# against the float64 truth, as the machine is and capped); here they cost 4 compilations more,
# a sixth of the suite's longest file (2026-12-06). This case on 8 devices of one process
# repeated the 2-process run (the same partitioned step and collectives, on 4 devices of 2
# processes) at 40 s of compilation (2026-12-07), and is left to `--eight_devices`.
# `first_round` still takes the official options.
TESTED = ("dropout_wgangp_batchnorm",)


def config_for(case):
    # A pool of 4 and a global batch of 8: the pool fills and then swaps within the first step.
    return tiny_config("paper,tiny", batch_size=8, pool_size=4, **CASES[case])


def batches(n):
    rng = np.random.default_rng(0)
    return [{k: rng.uniform(-1, 1, (8, *SHAPE)).astype(np.float32) for k in "AB"} for _ in range(n)]


def probed_step(model):
    """`step_with_intermediates(model)` as `run(state, batch, pins, pinned) -> (state, metrics, intermediates,
    probes)`. probes: the random bits the step draws (`masks`: its dropout masks, `alphas`: each
    penalty's alphas) and, at each kink of the step (ReLU, leaky ReLU, the |.| of L1), its input
    (`kink_inputs`) and the branch taken (`kinks`). With `pinned` true every kink takes the branch
    given in `pins` instead: the same function on a neighbourhood of the input where no kink is
    crossed (between two topologies only an input within round-off of zero can cross one).
    Masks, kink inputs and kinks come packed, one row per example (few collectives between
    processes); `run.shapes` holds their shapes once traced (`unpack`).
    """
    step = train_step.step_with_intermediates(model)
    originals = nn.relu, nn.leaky_relu, losses.l1, losses.gradient_penalty

    def run(state, batch, pins, pinned):
        probes = {"masks": [], "alphas": [], "kink_inputs": [], "kinks": []}

        def branch(x, positive):  # the branch a kink at x takes: `positive` (x > 0 or x >= 0), or its pin
            start = sum(k[0].size for k in probes["kinks"])
            probes["kink_inputs"].append(jax.lax.stop_gradient(x))
            probes["kinks"].append(positive)
            if pins is None:
                return positive
            return jnp.where(pinned, pins[:, start:start + x[0].size].reshape(x.shape), positive)

        def relu(x):  # jax.nn.relu: derivative 0 at 0
            return jnp.where(branch(x, jax.lax.stop_gradient(x) > 0), x, 0)

        def leaky_relu(x, negative_slope=0.01):  # jax.nn.leaky_relu: x >= 0
            return jnp.where(branch(x, jax.lax.stop_gradient(x) >= 0), x, negative_slope * x)

        def l1(a, b):
            d = a.astype(jnp.float32) - b.astype(jnp.float32)
            return jnp.mean(jnp.where(branch(d, jax.lax.stop_gradient(d) >= 0), d, -d))

        def interceptor(next_fun, args, kwargs, context):
            if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
                key = context.module.make_rng(context.module.rng_collection)
                ones = jax.lax.stop_gradient(args[0]) * 0 + 1  # laid out as the input
                probes["masks"].append(next_fun(ones, rng=key) != 0)
                return next_fun(*args, rng=key, **kwargs)
            return next_fun(*args, **kwargs)

        def gradient_penalty(discriminator, real, fake, key, **kw):
            def record(x):  # the mixed image of real = 1 and fake = 0 is alpha
                probes["alphas"].append(jax.lax.stop_gradient(x)[:, 0, 0, 0])
                return x
            originals[3](record, real * 0 + 1, jax.lax.stop_gradient(fake) * 0, key, **kw)
            return originals[3](discriminator, real, fake, key, **kw)

        nn.relu, nn.leaky_relu, losses.l1, losses.gradient_penalty = relu, leaky_relu, l1, gradient_penalty
        # The networks traced inline, where the probes see them.
        nested, train_step.NetworkApplier.nested = train_step.NetworkApplier.nested, False
        try:
            with nn.intercept_methods(interceptor):
                new_state, metrics, inter = step(state, batch)
        finally:
            nn.relu, nn.leaky_relu, losses.l1, losses.gradient_penalty = originals
            train_step.NetworkApplier.nested = nested
        for k in ("masks", "kink_inputs", "kinks"):
            run.shapes[k] = [x.shape for x in probes[k]]
            probes[k] = jnp.concatenate([x.reshape(x.shape[0], -1) for x in probes[k]] or [jnp.zeros((8, 0))], axis=1)
        return new_state, metrics, inter, probes

    run.shapes = {}
    return run


def unpack(probes, shapes):
    """`probes` with its packed rows split back into arrays of `shapes`."""
    out = dict(probes)
    for k, ks in shapes.items():
        ends = np.cumsum([int(np.prod(s[1:])) for s in ks])
        out[k] = [part.reshape(s) for part, s in zip(np.split(probes[k], ends[:-1], axis=1), ks)]
    return out


class Topology:
    """The probed step compiled for a mesh as `jit_train_step` shards it (nothing donated)."""

    def __init__(self, model, mesh, state, batch, kinks_shape=None, share=None):
        """`kinks_shape`: the packed kinks' global shape where another Topology of the same case
        knows it (`no_pins.shape`), saving a trace of the step. `share`: a file through which the
        processes of a cluster share one compilation (`_compile_once`)."""
        self.mesh = mesh
        self._placed = {}
        self.run = probed_step(model)
        rows = parallel.batch_sharding(mesh)
        jitted = jax.jit(parallel.traced_on(mesh, self.run), in_shardings=(parallel.replicated(mesh), rows, rows, parallel.replicated(mesh)),
                         out_shardings=parallel.replicated(mesh))
        local = 8 // jax.process_count()  # this process's rows of the global batch, as the input pipeline's
        self.rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
        if kinks_shape is None:
            kinks_shape = jax.eval_shape(lambda s, b: self.run(s, b, None, False)[3]["kinks"], state, batch).shape
        self.no_pins = np.zeros(kinks_shape, bool)
        lowered = jitted.lower(*self._args(state, batch, self.no_pins, False))
        self.compiled = _compile_once(lowered, share) if share else lowered.compile()
        self.flops = float(self.compiled.cost_analysis()["flops"])  # per device, custom calls not counted
        self.onednn_rows = onednn_call_rows(self.compiled)

    def _replicated(self, state):
        """`state` on every device of the mesh, placed once per state."""
        if id(state) not in self._placed:
            self._placed[id(state)] = state, _replicate(state, self.mesh)  # holds `state`: its id stays its
        return self._placed[id(state)][1]

    def _args(self, state, batch, pins, pinned):
        rows = parallel.batch_sharding(self.mesh)
        local_batch = {k: v[self.rows] for k, v in batch.items()}
        return (self._replicated(state), parallel.shard_batch(local_batch, self.mesh),
                jax.make_array_from_process_local_data(rows, pins[self.rows]),
                _replicate(np.asarray(pinned), self.mesh))

    def __call__(self, state, batch, pins=None):
        """One step from `state` on the global `batch`; with `pins` (a run's packed `kinks`), kinks pinned to them."""
        out = self.compiled(*self._args(state, batch, self.no_pins if pins is None else pins, pins is not None))
        state, metrics, inter, probes = jax.tree_util.tree_map(np.asarray, out)
        return state, metrics, inter, unpack(probes, self.run.shapes)


def _compile_once(lowered, path, timeout_s=600):
    """`lowered.compile()` in process 0, which writes the executable to `path`; the other processes
    load it from there (jax.experimental.serialize_executable) instead of compiling the same
    program again: each process's XLA would compile the same partitioned step, and jax's own
    sharing (`jax_share_binary_between_hosts`) finds no common cache key between CPU processes.
    What is compared is what the executable computes on each process's devices, and the collectives
    between them; the train command's processes compile their own (tests/test_multihost.py)."""
    if jax.process_index() == 0:
        compiled = lowered.compile()
        with open(path + ".part", "wb") as f:
            pickle.dump(serialize_executable.serialize(compiled), f)
        os.replace(path + ".part", path)
        return compiled
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process 0 wrote no executable to {path} within {timeout_s} s")
        time.sleep(0.2)
    with open(path, "rb") as f:
        return serialize_executable.deserialize_and_load(*pickle.load(f))


def _replicate(tree, mesh):
    """`parallel.replicate` without its check that every process holds the same values: across
    processes `jax.device_put` all-gathers each of a state's ~3,400 leaves to compare them (14 s
    a process in cProfile for the seven placements of a run). Every process holds the same
    states here: drawn to the bit (asserted in `multi`) or read from one file."""
    sharding = parallel.replicated(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree)


def packed(out):
    """A run's kinks as `pins`."""
    return np.concatenate([k.reshape(k.shape[0], -1) for k in out[3]["kinks"]], axis=1)


def digest(tree):
    """A hash of every bit of `tree`."""
    h = hashlib.sha256()
    for k, v in sorted(_leaves(tree).items()):
        h.update(k.encode() + np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def roundoff_scales(model, config):
    """`scales(state, batch, intermediates)`: `tests.inert.instance_norm_roundoff` of the step's two
    objectives as the step calls them ({} unless norm='instance')."""
    if config.norm != "instance":
        return lambda *args: {}

    def g_loss(params, real_A, real_B, key):
        run = NamingApplier(model, {k: {} for k in params}, key)
        return train_step.generator_loss(_sub(params, "G"), _sub(params, "D"), run, real_A, real_B)[0]

    def d_loss(params, real_A, real_B, key, pooled_A, pooled_B, gp_key):
        run = NamingApplier(model, {k: {} for k in params}, jax.random.fold_in(key, 1 << 20))  # the step's D key
        return train_step.discriminator_loss(_sub(params, "D"), run, real_A, real_B, pooled_A, pooled_B, gp_key)[0]

    g_scales, d_scales = instance_norm_roundoff(g_loss, ("G_A", "G_B")), instance_norm_roundoff(d_loss, ("D_A", "D_B"))

    def scales(state, batch, inter):
        keys = inter["keys"]
        return {**g_scales(state.params, batch["A"], batch["B"], keys["dropout"]),
                **d_scales(state.params, batch["A"], batch["B"], keys["dropout"], inter["pooled_A"], inter["pooled_B"],
                           keys["gp"])}

    return scales


def _sub(params, kind):
    return {k: v for k, v in params.items() if k.startswith(kind)}


def _leaves(tree):
    """{'net/path/to/leaf': array}"""
    return {"/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _hat_nu(opt_state, beta2):
    adam = opt_state[0]  # optax.adam: (ScaleByAdamState, ScaleByScheduleState)
    return _leaves(jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64) / (1 - beta2 ** int(adam.count)),
                                          adam.nu))


def _ratio(a, b, scale):
    """max |a - b| in float32 eps of `scale`."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / (EPS32 * scale))) if np.size(b) else 0.0


def _values(ours, ref, keys):
    """max over the arrays under `keys` of max |ours - ref| in eps of the array's largest magnitude."""
    o, r = _leaves({k: ours[k] for k in keys}), _leaves({k: ref[k] for k in keys})
    return max([_ratio(o[n], b, max(np.max(np.abs(b)), 1e-30)) for n, b in r.items()], default=0.0)


def _gradients(ours, ref, scales):
    """(the worst gradient as `_values` measures it, the worst bias before instance norm in units of
    ROUNDOFF_EPS eps of its round-off scale: <= 1 passes)."""
    worst, inert = 0.0, 0.0
    for group in ("g_grads", "d_grads"):
        o, r = _leaves(ours[2][group]), _leaves(ref[2][group])
        for name, b in r.items():
            net, _, path = name.partition("/")
            if path in scales.get(net, {}):
                # Its true gradient is zero: both values are round-off (tests/inert.py).
                inert = max(inert, _ratio(o[name], 0, scales[net][path]), _ratio(b, 0, scales[net][path]))
            else:
                worst = max(worst, _ratio(o[name], b, max(np.max(np.abs(b)), 1e-30)))
    return worst, inert / ROUNDOFF_EPS


def _updates(ours, ref, beta2=0.999):
    """The largest |du| against what the gradients' difference can move Adam's update by (<= 1 passes).

    u = -lr m^ / (sqrt(v^) + eps) moves by at most (lr + |u|) / (sqrt(v^) + eps) per unit of
    gradient (d m^/dg <= 1, and v^'s term <= |m^| / sqrt(v^)); the bound is twice that times
    |dg| (the steeper of the two topologies' v^, and the second order) plus 8 eps of |u|.
    """
    worst = 0.0
    lr = float(ref[1]["lr"])
    for grads, updates, opt in (("g_grads", "g_updates", "opt_state_G"), ("d_grads", "d_updates", "opt_state_D")):
        g_o, g_r, u_o, u_r = (_leaves(out[2][k]) for out, k in
                              ((ours, grads), (ref, grads), (ours, updates), (ref, updates)))
        v_o, v_r = (_hat_nu(getattr(out[0], opt), beta2) for out in (ours, ref))
        for name in u_r:
            u_max = np.maximum(np.abs(u_o[name]), np.abs(u_r[name]))
            slope = (lr + u_max) / (np.sqrt(np.minimum(v_o[name], v_r[name])) + 1e-8)
            bound = 2 * slope * np.abs(g_o[name].astype(np.float64) - g_r[name]) + 8 * EPS32 * u_max
            diff = np.abs(u_o[name].astype(np.float64) - u_r[name])
            worst = max(worst, float(np.max(np.where(diff == 0, 0.0, diff / np.maximum(bound, 1e-300)))))
    return worst


def compare(ours, ref, scales, pinned):
    """One step on another topology (`ours`; `pinned`: the same with every kink pinned to `ref`'s
    branch) against one device (`ref`), from the same state and batch. Values in float32 eps of
    the largest magnitude of their array; the rest as ratios to their bound (<= 1 passes)."""
    (s_o, _, i_o, p_o), (s_r, _, i_r, p_r) = ours, ref
    report = {
        "losses": _values(i_o, i_r, ["losses"]),
        "fakes": _values(i_o, i_r, ["fake_A", "fake_B"]),
        "pooled": _values(i_o, i_r, ["pooled_A", "pooled_B"]),
        "batch_stats": _values(i_o, i_r, ["batch_stats"]),
        "new_pools": _values(*({"A": s.pool_A.images, "B": s.pool_B.images} for s in (s_o, s_r)), ["A", "B"]),
        "kink_inputs": _values(p_o, p_r, ["kink_inputs"]),
        "crossed_kinks": int(sum(np.sum(a != b) for a, b in zip(p_o["kinks"], p_r["kinks"]))),
        "kinks": int(sum(k.size for k in p_r["kinks"])),
    }
    report["grads_unpinned"], _ = _gradients(ours, ref, scales)
    report["grads"], report["inert_grads"] = _gradients(pinned, ref, scales)
    report["updates"] = _updates(pinned, ref)
    report["inert_biases"] = sum(len(v) for v in scales.values())
    # Random bits, to the bit: the step's keys, every dropout mask, every alpha, every pool draw.
    same = lambda a, b: len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))  # noqa: E731
    report["keys_equal"] = same(list(_leaves(i_o["keys"]).values()), list(_leaves(i_r["keys"]).values()))
    report["dropout_masks"] = [len(p_r["masks"]), same(p_o["masks"], p_r["masks"])]
    report["dropout_keep_fraction"] = float(np.mean(p_r["masks"])) if p_r["masks"] else None
    report["alphas"] = [len(p_r["alphas"]), same(p_o["alphas"], p_r["alphas"])]
    report["pool_draws"] = [pool_draws(ours), pool_draws(ref)]
    return report


def against(topology, state, batch, ref, scales):
    """`compare`'s report of one step on `topology` against the 1-device `ref`, and whether the
    same step again on `topology` gives the same bits."""
    ours = topology(state, batch)
    report = compare(ours, ref, scales, topology(state, batch, pins=packed(ref)))
    report["repeats_to_the_bit"] = digest(topology(state, batch)) == digest(ours)
    return report


def pool_draws(out):
    """What each pool did, read to the bit from the step's own outputs: for each image of the
    batch whether the discriminator saw the new fake (n) or a stored image (s), which slots now
    hold a new fake, and how many slots are filled."""
    state, _, inter, _ = out
    draws = {}
    for d in "AB":
        fake, pooled, pool = inter[f"fake_{d}"], inter[f"pooled_{d}"], getattr(state, f"pool_{d}")
        shown = "".join("n" if np.array_equal(p, f) else "s" for p, f in zip(pooled, fake))
        slots = [i for i, im in enumerate(pool.images) if any(np.array_equal(im, f) for f in fake)]
        draws[d] = [shown, slots, int(pool.count)]
    return draws


def first_state(case):
    """The case's config, model and first state."""
    config = config_for(case)
    model = model_lib.build(config, steps_per_epoch=100)  # the rate stays constant over these steps
    return config, model, jax.device_get(train_state.create(model, 0, SHAPE, SHAPE))


def single(out_dir, eight_devices=False):
    """The 1-device results in OUT for the 2-process run (and the control); with `eight_devices`,
    also 8 devices against 1 in this process."""
    assert len(jax.devices()) == 8, jax.devices()
    mesh8, mesh1 = parallel.make_mesh(jax.devices()), parallel.make_mesh(jax.devices()[:1])
    saved, results = {}, []
    data = batches(LATER + 1)
    for case in TESTED:
        config, model, first = first_state(case)
        on1 = Topology(model, mesh1, first, data[0])
        on8 = Topology(model, mesh8, first, data[0], on1.no_pins.shape) if eight_devices else None
        later = first
        for b in data[:LATER]:
            later = on1(later, b)[0]
        batch = data[LATER]
        scales_of = roundoff_scales(model, config)
        for name, state in (("first", first), ("later", later)):
            ref = on1(state, batch)
            scales = scales_of(state, batch, ref[2])
            results.append({"case": case, "state": name, "topology": "1 device", "init": digest(first)})
            if on8 is not None:
                results.append({"case": case, "state": name, "topology": "8 devices vs 1", "init": digest(first),
                                "flops_per_device": [on8.flops, on1.flops],
                                "onednn_call_rows": [on8.onednn_rows, on1.onednn_rows],
                                **against(on8, state, batch, ref, scales)})
            saved[case, name] = dict(state=state, batch=batch, ref=ref, scales=scales, flops=on1.flops,
                                     onednn_rows=on1.onednn_rows)
            if name == "later":
                # A control: one image of the batch flipped is a difference these bounds see.
                flipped = dict(batch, A=batch["A"].copy())
                flipped["A"][0] = flipped["A"][0, :, ::-1]
                control = compare(on1(state, flipped), ref, scales, on1(state, flipped, pins=packed(ref)))
                results.append({"case": case, "state": name, "topology": "control: one image flipped", **control})
    with open(os.path.join(out_dir, "reference.pkl"), "wb") as f:
        pickle.dump(saved, f)
    _write(os.path.join(out_dir, "single.json"), results)


def _write(path, results):
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    for r in results:
        print(json.dumps(r))


def first_round(sequences=4):
    """The first round's test taken apart: two production steps (`jit_train_step`) on 8 devices against
    two on 1, from the first state, for a few pairs of batches. The relative difference of each
    network's second-step gradient (read from Adam's first moments), and of the same step from
    the same state (8 devices vs 1), and from the two states (both on 1 device)."""
    _, model, first = first_state("official")
    data = batches(sequences + 1)
    mesh8, mesh1 = parallel.make_mesh(jax.devices()), parallel.make_mesh(jax.devices()[:1])

    def production(mesh):
        step = train_step.jit_train_step(model, mesh)
        return lambda state, b: jax.device_get(step(parallel.replicate(state, mesh), parallel.shard_batch(b, mesh))[0])

    on8, on1 = production(mesh8), production(mesh1)

    def gap(before_a, after_a, before_b, after_b):
        out = {}
        for opt in ("opt_state_G", "opt_state_D"):
            mu = [_leaves(getattr(s, opt)[0].mu) for s in (before_a, after_a, before_b, after_b)]
            for net in sorted({n.split("/")[0] for n in mu[0]}):
                g = [np.concatenate([(m2[n] - 0.5 * m1[n]).ravel() / 0.5 for n in m1 if n.startswith(net + "/")])
                     for m1, m2 in ((mu[0], mu[1]), (mu[2], mu[3]))]
                out[net] = float(f"{np.linalg.norm(g[0] - g[1]) / np.linalg.norm(g[1]):.2g}")
        return out

    for i in range(sequences):
        s8, s1 = on8(first, data[i]), on1(first, data[i])
        two1 = on1(s1, data[i + 1])
        print(json.dumps({
            "batches": [i, i + 1],
            "first step": gap(first, s8, first, s1),
            "second step, each from its own state (the first round's test)": gap(s8, on8(s8, data[i + 1]), s1, two1),
            "second step from the same state, 8 devices vs 1": gap(s1, on8(s1, data[i + 1]), s1, two1),
            "second step from the two states, both on 1 device": gap(s8, on1(s8, data[i + 1]), s1, two1)}), flush=True)


def multi(out_dir, coordinator_address, num_processes, process_id):
    """One of several processes (MULTI_DEVICES devices each) against the 1-device results `single` left in OUT."""
    parallel.initialize_processes(coordinator_address, num_processes, process_id)
    mesh = parallel.make_mesh()
    with open(os.path.join(out_dir, "reference.pkl"), "rb") as f:
        saved = pickle.load(f)
    results = []
    for case in TESTED:
        config, model, first = first_state(case)
        # Every process draws the first state to the bit (process 0 reports it below as well).
        assert digest(first) == digest(saved[case, "first"]["state"]), (jax.process_index(), case)
        batch = saved[case, "first"]["batch"]
        topology = Topology(model, mesh, first, batch, packed(saved[case, "first"]["ref"]).shape,
                            share=os.path.join(out_dir, f"{case}.executable"))
        for name in ("first", "later"):
            s = saved[case, name]
            report = against(topology, s["state"], s["batch"], s["ref"], s["scales"])
            results.append({"case": case, "state": name, "init": digest(first),
                            "init_reference": digest(saved[case, "first"]["state"]),
                            "topology": f"{jax.process_count()} processes, {len(jax.devices())} devices vs 1",
                            "flops_per_device": [topology.flops, saved[case, name]["flops"]],
                            "onednn_call_rows": [topology.onednn_rows, saved[case, name]["onednn_rows"]], **report})
    if jax.process_index() == 0:
        _write(os.path.join(out_dir, "multi.json"), results)


if __name__ == "__main__":
    flags = dict((a[2:] + "=").split("=")[:2] for a in sys.argv[2:])
    if "process_id" in flags:
        multi(sys.argv[1], flags["coordinator_address"], int(flags["num_processes"]), int(flags["process_id"]))
    elif "first_round" in flags:
        first_round()
    else:
        single(sys.argv[1], eight_devices="eight_devices" in flags)

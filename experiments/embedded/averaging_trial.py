"""Trial: does an average of the generator weights score better than the last weights?

    python experiments/embedded/averaging_trial.py SEED WORKDIR [KEY=VALUE ...]

Trains the default config with `--config.seed=SEED` and the KEY=VALUE overrides (the trajectory is the default's: the
averages are kept beside the step, on the device) and scores, besides the last weights,
exponential moving averages and the uniform means of steps 800, 1,600 and 2,400 to the end (writes
WORKDIR/avg_eval.json). The EMAs' decay is min(d, (1+t)/(10+t)), which at 3,200 steps is
below every d tried: the three come out the same (about the last 350 steps).
"""
import json, sys
import jax, jax.numpy as jnp
from cyclejax import training, train_step, embedded_score
from cyclejax import model as model_lib
from cyclejax.configs import default

seed, workdir = int(sys.argv[1]), sys.argv[2]
AV = {"ema999": 0.999, "ema9995": 0.9995, "ema9998": 0.9998}
TAILS = (800, 1600, 2400)
avg = {}
orig = train_step.jit_train_step

@jax.jit
def update(avg, g, step):
    t = step.astype(jnp.float32)
    out = {}
    for k, d in AV.items():
        dt = jnp.minimum(d, (1 + t) / (10 + t))
        out[k] = jax.tree.map(lambda a, p: dt * a + (1 - dt) * p, avg[k], g)
    for start in TAILS:  # uniform mean of steps >= start
        w = 1.0 / jnp.maximum(t - start + 1, 1)
        out[f"tail{start}"] = jax.tree.map(lambda a, p: jnp.where(t >= start, a + w * (p - a), p), avg[f"tail{start}"], g)
    return out

def patched(*a, **k):
    fn = orig(*a, **k)
    def step(state, batch):
        new, m = fn(state, batch)
        g = {n: new.params[n] for n in ("G_A", "G_B")}
        if not avg:
            avg.update({k: g for k in (*AV, *(f"tail{s}" for s in TAILS))})
        avg.update(update(dict(avg), g, new.step - 1))
        return new, m
    return step
train_step.jit_train_step = patched

config = default.get_config("")
config.seed = seed
for kv in sys.argv[3:]:
    k, v = kv.split("=")
    config[k] = type(config[k])(v)
res = training.train_and_evaluate(config, workdir)
model = model_lib.build(config, 800)
st = json.load(open(f"{workdir}/eval.json"))
out = {"last": st}
# batch_stats empty (instance norm)
for k, g in avg.items():
    g = jax.device_get(g)
    to_B = model_lib.batch_translator(model.G_A, g["G_A"], {})
    to_A = model_lib.batch_translator(model.G_B, g["G_B"], {})
    out[k] = embedded_score.score(to_B, to_A, step=3200)
json.dump(out, open(f"{workdir}/avg_eval.json", "w"), indent=1)
for k, r in out.items():
    print(k, " ".join(f"{d} {r[d]['model'] / min(r[d]['identity'], r[d]['colour_transfer']):.3f} (colour {r[d+'_parts']['model']['colour']:.4f} texture {r[d+'_parts']['model']['texture']:.4f})" for d in ("AtoB", "BtoA")), flush=True)

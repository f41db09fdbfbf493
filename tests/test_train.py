"""train_and_evaluate: exact resume and the architecture check (the eval report: test_train_cli.py)."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclejax import checkpoints, training
from cyclejax.errors import NonFiniteError
from tests.conftest import tiny_config


def _final_params(workdir):
    mngr = checkpoints.manager(workdir)
    step = mngr.latest_step()
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    return step, restored["state"]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path):
    straight = training.train_and_evaluate(tiny_config(max_steps=12), tmp_path / "straight")
    first = training.train_and_evaluate(tiny_config(max_steps=6), tmp_path / "resumed")
    second = training.train_and_evaluate(tiny_config(max_steps=12), tmp_path / "resumed")
    assert first["step"] == 6 and second["step"] == straight["step"] == 12
    step_a, a = _final_params(tmp_path / "straight")
    step_b, b = _final_params(tmp_path / "resumed")
    assert step_a == step_b == 12
    same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    assert all(jax.tree_util.tree_leaves(same)), "resumed state differs from the uninterrupted one"
    assert second["metrics"] == straight["metrics"]
    assert int(a["pool_A"]["count"]) == 5 and int(a["step"]) == 12
    assert set(a["ema"]) == {"G_A", "G_B"}  # the generators' average is resumed too (bitwise, above)

    # A run that would drop (or start) the average cannot resume the checkpoint: named, before any training.
    with pytest.raises(checkpoints.CheckpointMismatch, match=r"ema_decay=0.999 .* --config.ema_decay=0.999 to resume"):
        training.train_and_evaluate(tiny_config(max_steps=14, ema_decay=0.0), tmp_path / "resumed")

    # The same workdir with another architecture is refused by name, before any training.
    with pytest.raises(checkpoints.CheckpointMismatch, match="ngf: checkpoint 4, config 8"):
        training.train_and_evaluate(tiny_config(max_steps=14, ngf=8), tmp_path / "resumed")
    assert _final_params(tmp_path / "resumed")[0] == 12


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_is_never_checkpointed(tmp_path):
    # A learning rate of 1e30 turns the first Adam step's parameters to about 1e30, so the
    # second step's activations overflow: its losses are the first non-finite ones.
    config = tiny_config(lr=1e30, max_steps=6, checkpoint_every=1, log_every=100)
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 2: D_A=\S+ G_A=\S+ .*idt_B="):
        training.train_and_evaluate(config, tmp_path)
    step, state = _final_params(tmp_path)
    assert step == 1
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(state)
               if np.issubdtype(np.asarray(x).dtype, np.floating))


@pytest.mark.slow
def test_scale_width_trains_at_load_size_wide_images(tmp_path):
    """preprocess='scale_width', as the official: width to load_size (48 here), height by the
    aspect; the state (pools, networks) is set up at that size, and the pools hold it."""
    from tests.test_input_pipeline import _folder

    data = _folder(tmp_path / "data", [(40, 60)] * 2, [(20, 30)] * 2)  # both 3:2 -> 48 wide, 32 high
    config = tiny_config(max_steps=2, preprocess="scale_width", load_size=48, crop_size=32, dataset=data,
                         eval_at_end=False)
    result = training.train_and_evaluate(config, tmp_path / "run")
    assert result["step"] == 2
    _, state = _final_params(tmp_path / "run")
    assert state["pool_A"]["images"].shape[1:] == state["pool_B"]["images"].shape[1:] == (32, 48, 3)


def test_default_workdirs_started_in_the_same_second_are_distinct(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt: "20261129-061500")
    paths = [training.default_workdir(str(tmp_path / "runs")) for _ in range(3)]
    assert [p.split("/")[-1] for p in paths] == ["20261129-061500", "20261129-061500-2", "20261129-061500-3"]
    assert all((tmp_path / "runs" / p.split("/")[-1]).is_dir() for p in paths)


@pytest.mark.slow
def test_a_checkpoint_of_another_image_size_is_a_mismatch_not_damage(tmp_path):
    """preprocess='none' on images of another size: the pools' shapes differ. Refused naming the
    array and both shapes; nothing is set aside as damaged and the checkpoint still resumes."""
    from tests.test_input_pipeline import _folder

    small = _folder(tmp_path / "small", [(32, 32)] * 2, [(32, 32)] * 2)
    large = _folder(tmp_path / "large", [(40, 40)] * 2, [(40, 40)] * 2)
    run = tmp_path / "run"
    training.train_and_evaluate(tiny_config(max_steps=2, preprocess="none", dataset=small, eval_at_end=False), run)
    with pytest.raises(checkpoints.CheckpointMismatch, match=r"holds pool_A/images of shape \(5, 32, 32, 3\), this "
                                                             r"run needs \(5, 40, 40, 3\)"):
        training.train_and_evaluate(tiny_config(max_steps=4, preprocess="none", dataset=large, eval_at_end=False), run)
    assert not (run / "damaged_checkpoints").exists()
    again = training.train_and_evaluate(tiny_config(max_steps=4, preprocess="none", dataset=small,
                                                    eval_at_end=False), run)
    assert again["step"] == 4


@pytest.mark.slow
def test_a_model_with_dropout_trains_writes_samples_and_scores(tmp_path):
    """no_dropout=False: the sample grids and the embedded score apply the generators outside
    the train step (dropout on, a fixed key); they raised flax's InvalidRngError before."""
    result = training.train_and_evaluate(tiny_config(max_steps=2, no_dropout=False, sample_every=1,
                                                     eval_at_end=True), tmp_path / "run")
    assert result["step"] == 2 and set(result["eval"]) >= {"AtoB", "BtoA"}
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())[-1] == "step_00000002.png"


def test_the_same_config_again_in_a_process_traces_no_step_and_no_initialisation(tmp_path):
    """A notebook's training cell run again, or a run resumed in the same process, reuses the
    compiled step (`train_step.jit_train_step`) and initialisations (`train_state.create`):
    nothing of either is traced or compiled again, and the run computes the same losses."""
    config = tiny_config(max_steps=2, eval_at_end=False)
    first = training.train_and_evaluate(config, tmp_path / "first")
    events = []

    def listener(event, duration, **kw):
        events.append((event.rsplit("/", 1)[-1], kw.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        again = training.train_and_evaluate(config, tmp_path / "again")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert again["step"] == 2 and again["metrics"] == first["metrics"]
    traced = [fun.split("(")[-1].rstrip(")") for event, fun in events if event == "jaxpr_trace_duration"]
    assert traced and not [f for f in traced if f in ("train_step", "init", "_init", "_apply")], traced

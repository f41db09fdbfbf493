"""The learning-rate schedule against the official per-epoch `linear` policy."""
import numpy as np
import pytest

from cyclejax import optim

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)


@pytest.mark.parametrize("n_epochs, n_epochs_decay, steps_per_epoch", [(100, 100, 7), (3, 5, 11), (10, 1, 4)])
def test_schedule_follows_the_official_multiplier_at_every_epoch_boundary(n_epochs, n_epochs_decay, steps_per_epoch):
    lr = 2e-4
    schedule = optim.learning_rate_schedule(lr, n_epochs, n_epochs_decay, steps_per_epoch)
    for epoch in range(n_epochs + n_epochs_decay):
        ours = float(schedule(epoch * steps_per_epoch)) / lr
        official = optim.official_multiplier(epoch, n_epochs, n_epochs_decay)
        assert abs(ours - official) <= 1 / (n_epochs_decay + 1) + 1e-6, (epoch, ours, official)
        if epoch < n_epochs:
            assert ours == pytest.approx(1.0)
    total = (n_epochs + n_epochs_decay) * steps_per_epoch
    assert float(schedule(total - 1)) / lr <= 1 / (n_epochs_decay * steps_per_epoch) + 1e-6
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-12)


def test_official_multiplier_values():
    assert optim.official_multiplier(0, 100, 100) == 1.0
    assert optim.official_multiplier(99, 100, 100) == 1.0
    assert optim.official_multiplier(100, 100, 100) == pytest.approx(1 - 1 / 101)
    assert optim.official_multiplier(199, 100, 100) == pytest.approx(1 / 101)


def test_schedule_is_monotone():
    s = optim.learning_rate_schedule(1.0, 2, 3, 5)
    values = np.array([float(s(i)) for i in range(30)])
    assert np.all(np.diff(values) <= 1e-9)

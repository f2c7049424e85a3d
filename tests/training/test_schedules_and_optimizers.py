import keras
import pytest

from tfface.errors import UserError
from tfface.training import OPTIMIZERS, learning_rate_for_epoch, make_optimizer, read_schedule_file


def test_facenet_schedule_file(tmp_path):
    path = tmp_path / "lr.txt"
    path.write_text("# comment\n0:  0.05\n\n100: 0.005  # drop\n60: 0.01\n150: -\n")
    schedule = read_schedule_file(str(path))
    assert schedule == [(0, 0.05), (60, 0.01), (100, 0.005), (150, None)]
    assert [learning_rate_for_epoch(schedule, e) for e in (0, 59, 60, 99, 100, 149)] == [0.05, 0.05, 0.01, 0.01, 0.005, 0.005]
    assert learning_rate_for_epoch(schedule, 150) is None  # '-' stops training


def test_bad_schedule_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_schedule_file(str(tmp_path / "missing.txt"))
    path = tmp_path / "bad.txt"
    path.write_text("0: 0.1\nten: 0.01\n")
    with pytest.raises(UserError, match="line 2 .* expected '<epoch>: <rate>'"):
        read_schedule_file(str(path))
    path.write_text("# only a comment\n")
    with pytest.raises(UserError, match="no '<epoch>: <rate>' lines"):
        read_schedule_file(str(path))


@pytest.mark.parametrize(
    "name, cls, attrs",
    [
        ("ADAGRAD", keras.optimizers.Adagrad, {}),
        ("ADADELTA", keras.optimizers.Adadelta, {"rho": 0.9, "epsilon": 1e-6}),
        ("ADAM", keras.optimizers.Adam, {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 0.1}),
        ("RMSPROP", keras.optimizers.RMSprop, {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0}),
        ("MOM", keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
        ("SGD", keras.optimizers.SGD, {"momentum": 0.0}),
    ],
)
def test_optimizers_use_facenet_constants(name, cls, attrs):
    optimizer = make_optimizer(name, 0.25)
    assert type(optimizer) is cls and float(optimizer.learning_rate) == 0.25
    for key, value in attrs.items():
        assert getattr(optimizer, key) == pytest.approx(value)
    assert set(OPTIMIZERS) >= {name}


def test_unknown_optimizer():
    with pytest.raises(UserError, match="optimizer: expected one of"):
        make_optimizer("LION", 0.1)

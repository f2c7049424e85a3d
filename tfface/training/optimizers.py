"""facenet's optimizer names mapped to Keras optimizers with facenet's hyper-parameters."""
from __future__ import annotations

import keras

from tfface.errors import check_choice

OPTIMIZERS = ("ADAGRAD", "ADADELTA", "ADAM", "RMSPROP", "MOM", "SGD")


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Builds the optimizer facenet's ``--optimizer`` flag names (same constants as facenet)."""
    check_choice(name, OPTIMIZERS, "optimizer")
    if name == "ADAGRAD":
        return keras.optimizers.Adagrad(learning_rate)
    if name == "ADADELTA":
        return keras.optimizers.Adadelta(learning_rate, rho=0.9, epsilon=1e-6)
    if name == "ADAM":
        return keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=0.1)
    if name == "RMSPROP":
        return keras.optimizers.RMSprop(learning_rate, rho=0.9, momentum=0.9, epsilon=1.0)
    if name == "MOM":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    return keras.optimizers.SGD(learning_rate)

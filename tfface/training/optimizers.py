"""facenet's optimizer names mapped to Keras optimizers with facenet's hyper-parameters."""
from __future__ import annotations

import keras
import tensorflow as tf

from tfface.core.errors import UserError, check_choice

OPTIMIZERS = ("ADAGRAD", "ADADELTA", "ADAM", "RMSPROP", "MOM", "SGD")


def make_optimizer(name: str, learning_rate: float, moving_average_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """Builds the optimizer facenet's ``--optimizer`` flag names (same constants as facenet).

    ``moving_average_decay`` > 0 makes it keep an exponential moving average of the weights it
    updates (Keras' ``use_ema``: the first step copies the weights, then every step
    ``average = decay * average + (1 - decay) * weight``); ``finalize_variable_values`` copies
    the averages into the weights."""
    check_choice(name, OPTIMIZERS, "optimizer")
    if not 0.0 <= moving_average_decay < 1.0:
        raise UserError(f"--moving_average_decay: expected a value in [0, 1), got {moving_average_decay}")
    ema = {"use_ema": True, "ema_momentum": moving_average_decay} if moving_average_decay else {}
    if name == "ADAGRAD":
        return keras.optimizers.Adagrad(learning_rate, **ema)
    if name == "ADADELTA":
        return keras.optimizers.Adadelta(learning_rate, rho=0.9, epsilon=1e-6, **ema)
    if name == "ADAM":
        return keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=0.1, **ema)
    if name == "RMSPROP":
        return keras.optimizers.RMSprop(learning_rate, rho=0.9, momentum=0.9, epsilon=1.0, **ema)
    if name == "MOM":
        return MomentumSGD(learning_rate, momentum=0.9, nesterov=True, **ema)
    return keras.optimizers.SGD(learning_rate, **ema)


class MomentumSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with momentum whose update is one fused TF kernel per variable.

    Keras updates ``m = momentum m - lr g; w += m`` (Nesterov: ``w += momentum m - lr g``) with
    eight element-wise ops per variable; ``ResourceApplyKerasMomentum`` computes the same
    formula in one pass over the weights, which matters for large backbones and heads on CPU.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(momentum), lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype), use_nesterov=self.nesterov,
        )


def _handle(variable) -> tf.Tensor:
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle

"""facenet's optimizer names mapped to Keras optimizers with facenet's hyper-parameters."""
from __future__ import annotations

import keras
import tensorflow as tf

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
        return MomentumSGD(learning_rate, momentum=0.9, nesterov=True)
    return keras.optimizers.SGD(learning_rate)


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

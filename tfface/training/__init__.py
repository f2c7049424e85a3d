"""Training: strategy selection, optimizers, learning-rate schedules and the custom loop."""
from tfface.training.optimizers import OPTIMIZERS, make_optimizer
from tfface.training.schedules import learning_rate_for_epoch, read_schedule_file
from tfface.training.strategy import STRATEGIES, configure_cpu_devices, get_strategy
from tfface.training.trainer import TrainConfig, Trainer, TrainResult

__all__ = [
    "OPTIMIZERS", "STRATEGIES", "TrainConfig", "TrainResult", "Trainer", "configure_cpu_devices",
    "get_strategy", "learning_rate_for_epoch", "make_optimizer", "read_schedule_file",
]

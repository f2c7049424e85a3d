"""tfface: face recognition in TensorFlow 2 / Keras 3."""
import os

# TensorFlow's x86 Linux wheels run their CPU kernels through oneDNN only on CPUs with AVX-512
# VNNI/BF16 or AMX; elsewhere (e.g. AVX2-only CPUs) they fall back to Eigen kernels built for
# AVX without FMA, which train MobileFaceNet and IR-SE-50 several times slower. oneDNN picks the
# best instructions of the CPU at run time and only changes CPU kernels (GPUs and TPUs run as
# before). TensorFlow reads this when it is imported: set it yourself (0 turns oneDNN off) if
# that happens before tfface is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from tfface_align.quiet import quiet_tool_start  # noqa: E402  (imports tfface_align, after the line above)

quiet_tool_start()  # before TensorFlow is imported: a tool prints no C++ start-up lines

from tfface import data, evaluation, heads, losses, models, training  # noqa: E402
from tfface.core import images, preprocessing  # noqa: E402
from tfface.export import export_saved_model  # noqa: E402
from tfface.recognition.inference import load_embedder  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "data", "evaluation", "export_saved_model", "heads", "images", "load_embedder", "losses", "models", "preprocessing", "training",
]

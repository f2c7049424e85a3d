"""Released weights -> tfface embedders, exactly: files the user holds (``--import FILE``) and
pretrained models installed from the package registry (``--pretrained NAME``).

Each source format registers a loader in :mod:`tfface.importers.registry`; an import returns an
:class:`~tfface.importers.registry.Imported` (embedder, alignment of its faces, provenance), which
``python -m tfface.export`` writes like any trained model, with the provenance (file, SHA-256,
format, architecture, licence note) in the export's metadata.
"""
from tfface.importers.registry import (
    Imported,
    file_sha256,
    import_file,
    list_formats,
    list_pretrained,
    load_pretrained,
    register_format,
    register_pretrained,
)

# Importer modules (each registers its formats / pretrained models on import):
from tfface.importers import caffe, facenet  # noqa: F401,E402
from tfface.importers import dlib_resnet  # noqa: E402,F401  (pretrained dlib_resnet_v1)
from tfface.importers import mxnet_params, onnx_file, pth  # noqa: E402,F401  (the InsightFace family)

__all__ = [
    "Imported", "file_sha256", "import_file", "list_formats", "list_pretrained", "load_pretrained", "register_format",
    "register_pretrained",
]

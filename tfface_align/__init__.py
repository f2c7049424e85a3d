"""tfface_align: MTCNN face detection and landmark alignment in TensorFlow 2.

    det = tfface_align.MTCNN()
    faces = det.detect("photo.jpg")                   # Faces(boxes (N, 5), landmarks (N, 5, 2))
    chip = tfface_align.align(image, faces.landmarks[0], "arcface")   # 112x112
    chip = tfface_align.crop(image, faces.boxes[0], margin=32, image_size=160)
"""
import os

from tfface_align.quiet import quiet_tool_start

# oneDNN (TensorFlow's CPU kernels) JIT-compiles a kernel per op and tensor shape and keeps 1024 in
# an LRU cache. One photo size needs ~120 (about ten ops on each of a dozen pyramid levels), so a
# stream of photos of more than ~8 sizes recompiled its convolutions on every call: 17% of the time
# on the photos of testdata/faces. 8192 kernels take ~140 MB. oneDNN reads this when TensorFlow
# runs its first op: set it yourself if that happens before tfface_align is imported.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")
quiet_tool_start()  # before TensorFlow is imported: a tool prints no C++ start-up lines

from tfface_align.image_io import load_photo, read_image  # noqa: E402
from tfface_align.mtcnn import MTCNN, Faces  # noqa: E402
from tfface_align.transform import (  # noqa: E402
    ARCFACE_TEMPLATE,
    SPHEREFACE_TEMPLATE,
    align,
    align_tf,
    crop,
    crop_tf,
    similarity_transform,
    similarity_transform_tf,
)

__all__ = [
    "ARCFACE_TEMPLATE", "SPHEREFACE_TEMPLATE", "Faces", "MTCNN", "align", "align_tf", "crop", "crop_tf",
    "load_photo", "read_image", "similarity_transform", "similarity_transform_tf",
]

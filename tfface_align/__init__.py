"""tfface_align: MTCNN face detection and landmark alignment in TensorFlow 2.

    det = tfface_align.MTCNN()
    faces = det.detect("photo.jpg")                   # Faces(boxes (N, 5), landmarks (N, 5, 2))
    chip = tfface_align.align(image, faces.landmarks[0], "arcface")   # 112x112
    chip = tfface_align.crop(image, faces.boxes[0], margin=32, image_size=160)
"""
from tfface_align.image_io import load_photo, read_image
from tfface_align.mtcnn import MTCNN, Faces
from tfface_align.transform import (
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

"""tfface_align: MTCNN face detection and landmark alignment in TensorFlow 2."""

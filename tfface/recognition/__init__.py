"""Using an exported model: load it (:mod:`inference`), cut and embed faces the way it was trained
(:mod:`faces`), and the applications built on that: SVM classifier (:mod:`classification`),
facebank (:mod:`facebank`) and video recognition (:mod:`video`)."""

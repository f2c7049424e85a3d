"""Nearest-neighbour search over face templates: one interface (:mod:`index`), FAISS in process
(:mod:`faiss_index`, the default) and Milvus / milvus-lite (:mod:`milvus_index`, the ``milvus`` extra);
seeded synthetic galleries for tests and benchmarks (:mod:`synthetic`)."""

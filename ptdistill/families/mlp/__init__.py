"""Feature vectors: splits as parquet arrays (``split``), the paper's synthetic Gaussians
(``gaussians``), your own tables (``tabular``), MLP teachers and students (``models``), their
training loop (``training``) and the steps' backend (``backend``).
"""

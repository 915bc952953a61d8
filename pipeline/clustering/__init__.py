"""Spherical k-means clustering and semantic dedup of embeddings.

The math (kmeans.py, dedup.py, vectors.py) is plain numpy and never imports Ray; distributed.py is the thin Ray
Data edge that maps those functions over dataset blocks; report.py writes the summary and plots.
"""

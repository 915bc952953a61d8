"""Bitext mining: margin-scored exact k-NN between two embedded corpora (Artetxe & Schwenk, 2019).

The math modules (knn, margin, selection, dedup) are plain numpy/torch and never import Ray; `mining_actor` is the
thin Ray edge that holds one shard of the keys per actor.
"""

"""rayembed: multilingual text corpora to normalized embeddings on Ray."""

__version__ = "0.1.0"

"""vidxai: train video classifiers and explain them with Layer-wise Relevance Propagation."""

__version__ = "0.1.0"

"""netsize: right-size neural networks by growing, pruning and comparing them on one budget."""

__version__ = "0.1.0"

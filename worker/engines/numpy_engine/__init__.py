"""A from-scratch NumPy engine for fully connected networks, with Keras's semantics."""

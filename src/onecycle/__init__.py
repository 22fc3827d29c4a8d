"""onecycle: Leslie N. Smith's LR range test and 1cycle policy, faithfully, as a library and a
replication suite (arXiv 1506.01186, 1708.07120, 1803.09820)."""

__version__ = "0.1.0"

"""distill: DeepSeek-R1-style reasoning distillation."""

__version__ = "0.1.0"

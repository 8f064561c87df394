"""bounce-consumer: classify raw email delivery events into status and recipientState."""

__all__ = ["__version__"]

__version__ = "0.1.0"

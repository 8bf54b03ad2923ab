"""gptfl-secure: GPT-FL on real secure aggregation."""
__version__ = "0.1.0"

"""End-to-end GPT-FL simulation: ``python -m gptfl_secure.sim``."""

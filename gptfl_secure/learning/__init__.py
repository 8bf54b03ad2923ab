"""Learning side of GPT-FL: data, partitioning (and, in later issues, models and training)."""

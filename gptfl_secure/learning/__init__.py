"""Learning side of GPT-FL: data sets and their features, partitioning, models, local and
centralized training, quantized updates and server optimizers."""

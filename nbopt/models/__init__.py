"""Built-in models and the resolution of a recipe's `model:` into an ``nn.Module``."""

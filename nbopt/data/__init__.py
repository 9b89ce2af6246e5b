"""Built-in datasets and the resolution of a recipe's `data:` into train/val/test batches."""

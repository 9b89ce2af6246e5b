"""One technique per module, each with the registry of names a recipe may use for it."""

"""The ipywidgets panel: the recipe as controls."""

"""Triton serving: model-repository generation, server launcher and Triton model code."""

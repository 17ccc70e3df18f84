"""Shared pieces of the recommender: settings, data set, paths and the in-process pipeline."""

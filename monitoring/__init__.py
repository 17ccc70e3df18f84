"""Model-quality signals: reference profiles, live feature/score counters, drift reports."""

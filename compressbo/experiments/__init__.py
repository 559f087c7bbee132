"""Experiments: benchmark problems, comparisons of acquisitions over seeds, and their reports."""

"""Plumbing shared by the command-line tools (``python -m tfface.<tool>``): flag parsing, one-line
errors, quiet start-up, and the checks the evaluation tools have in common."""

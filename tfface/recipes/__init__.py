"""Runnable end-to-end recipes (``python -m tfface.recipes.<name>``)."""

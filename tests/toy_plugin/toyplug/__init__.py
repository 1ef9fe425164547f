"""A toy sourcetrace plug-in: see model.py."""

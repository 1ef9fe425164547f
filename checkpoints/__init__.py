"""Official checkpoint files: reading their containers without unpickling, and the registry of the
study's pretrained models."""

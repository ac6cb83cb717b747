"""Stage 4: training a new classifier head on top of the frozen backbone's features.

Modules: settings (torch-free defaults), heads, fit (the training loop), pipeline (train()).
"""

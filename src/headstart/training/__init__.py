"""Stage 5: training a new classifier head on top of the frozen backbone's features.

Modules: settings (torch-free defaults), fit (heads on cached features), solver (the linear
head), choice (small-data choices by cross-validation), finetune, strategy (auto).
"""

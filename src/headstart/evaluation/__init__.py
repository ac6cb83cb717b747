"""Stage 6: honest numbers about a trained classifier."""

from headstart.evaluation.metrics import Evaluation, evaluate_probabilities

__all__ = ["Evaluation", "evaluate_probabilities"]

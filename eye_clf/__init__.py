"""eye_clf: is the eye in this 24x24 grayscale patch open? ``eye_clf.predict_proba`` answers with P(open)."""
from .predict import load_model, predict_proba

__all__ = ["predict_proba", "load_model"]
__version__ = "0.1.0"

"""eye_clf: is the eye in this 24x24 grayscale patch open? ``eye_clf.predict_proba`` answers with P(open).

Importing the package loads only numpy and Pillow; onnxruntime or torch are imported by the first prediction.
"""
from .predict import load_model, load_session, predict_proba, recommended_threshold

__all__ = ["predict_proba", "recommended_threshold", "load_model", "load_session"]
__version__ = "0.3.0"

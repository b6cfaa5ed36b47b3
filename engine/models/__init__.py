"""Flow-matching models behind one interface, and their loading from local directories."""

from engine.models.base import FlowModel
from engine.models.conditioning import Conditioning
from engine.models.loading import ModelLoadError, load_model, resolve_model_dir

__all__ = ["Conditioning", "FlowModel", "ModelLoadError", "load_model", "resolve_model_dir"]

"""kdprune: knowledge distillation + structured pruning of SSL conformer speech models."""

__version__ = "0.1.0"
# Bumped when the model-directory format changes; `load_model_dir` refuses other versions.
MODEL_FORMAT_VERSION = 1

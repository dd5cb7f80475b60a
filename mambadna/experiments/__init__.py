"""Studies that chain the package's steps (simulate, pretrain, finetune, evaluate) into one
reproducible experiment with tables and plots; above train/ and pipelines/ in the layers."""

from mambadna.experiments.context_curve import ContextCurveConfig, context_curve

__all__ = ["ContextCurveConfig", "context_curve"]

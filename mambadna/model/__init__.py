"""The MambaDNA network: config, Mamba mixer, heads, streaming state, save/load.

    from mambadna.model import ModelConfig, MambaDNA, load_model, lm_loss
    cfg = ModelConfig.from_preset("paper-1.4m")
    model = MambaDNA(cfg)
    logits = model(tokens)                       # (batch, L) int64 -> (batch, L, vocab) fp32
    logits, state = model(tokens, return_state=True)
    model.save_pretrained("out/model"); model = load_model("out/model")
    context = context_groups(4)                  # in every process of a torchrun launch
    start, stop = context.bounds(tokens.shape[1])
    logits = model(tokens[:, start:stop], context=context)   # this rank's segment, exact
"""

from mambadna.kernels.context_parallel import (
    ContextGroup,
    broadcast_from,
    context_groups,
    context_sum,
    gather_segments,
)
from mambadna.model.config import PRESETS, ModelConfig
from mambadna.model.io import load_model, save_pretrained
from mambadna.model.network import MambaDNA, lm_loss, segment_lm_loss
from mambadna.model.state import ModelState

__all__ = [
           "PRESETS",
           "ContextGroup",
           "MambaDNA",
           "ModelConfig",
           "ModelState",
           "broadcast_from",
           "context_groups",
           "context_sum",
           "gather_segments",
           "lm_loss",
           "load_model",
           "save_pretrained",
           "segment_lm_loss",
]

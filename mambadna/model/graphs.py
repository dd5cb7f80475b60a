"""Fixed-shape inference replayed from a CUDA graph: no Python or launch work per call.

A forward of a small model over a short window launches a few hundred kernels (12-16 blocks of
~15 ops each, six of them the scan's), and at 4,096 bases the host's time per launch decides the
speed. ``GraphedHiddenStates`` captures ``model.hidden_states`` once for a fixed (batch, L) and
replays it: each call copies the tokens into the graph's input buffer, replays, and returns the
output buffer (overwritten by the next call: copy it if you keep it).

    graphed = GraphedHiddenStates(model, batch=8, length=4096)     # CUDA model, eval mode
    hidden = graphed(tokens)                                        # (8, 4096) -> (8, 4096, d)

Falls back to ``model.hidden_states`` (same results) for a model on the CPU, and for a
bidirectional model given padded rows (its reversal needs the rows' lengths).
"""

from __future__ import annotations

import torch

from mambadna.alphabet import PAD
from mambadna.errors import InputError

__all__ = ["GraphedHiddenStates"]


class GraphedHiddenStates:
    """``model.hidden_states(tokens)`` for tokens of one shape, from a captured CUDA graph."""

    def __init__(self, model, batch: int, length: int, dtype: torch.dtype | None = torch.bfloat16,
                 warmup: int = 2) -> None:
        self.model, self.shape, self.dtype = model, (batch, length), dtype
        self.graph = None
        if model.device.type != "cuda":
            return
        device = model.device
        self._tokens = torch.randint(0, 4, self.shape, device=device)  # any valid tokens
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # compiles the kernels, fills the plan caches
                self._run()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._out = self._run()

    def _run(self) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            return self.model._backbone(self._tokens)[0]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tuple(tokens.shape) != self.shape:
            raise InputError(f"this graph was captured for tokens of shape {self.shape}, got "
                             f"{tuple(tokens.shape)}",
                             fix="capture one GraphedHiddenStates per window shape")
        if self.graph is None or (self.model.config.bidirectional and bool((tokens == PAD).any())):
            with torch.inference_mode(), torch.autocast(
                    self.model.device.type, dtype=self.dtype or torch.float32,
                    enabled=self.dtype is not None):
                return self.model.hidden_states(tokens)
        from mambadna.model.network import _as_tokens

        self._tokens.copy_(_as_tokens(tokens, self.model.config.vocab_size), non_blocking=True)
        self.graph.replay()
        return self._out

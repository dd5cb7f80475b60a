"""ModelState: what a MambaDNA network carries from one piece of a sequence to the next.

Per Mamba block, the causal convolution needs the last d_conv-1 mixer inputs and the selective
scan needs its (d_inner, d_state) state. Together they make streaming exact: running a sequence
in pieces with the state carried equals one full pass (to fp32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelState:
    """Per-layer streaming state; all tensors fp32.

    conv[i]: (batch, d_inner, d_conv - 1), the last inputs of block i's convolution.
    ssm[i]: (batch, d_inner, d_state), block i's selective-scan state.
    """

    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]

    def __post_init__(self) -> None:
        if len(self.conv) != len(self.ssm):
            raise ValueError(f"ModelState needs one conv and one ssm state per layer, got "
                             f"{len(self.conv)} conv and {len(self.ssm)} ssm states")

    @classmethod
    def zeros(cls, n_layer: int, batch_size: int, d_inner: int, d_conv: int, d_state: int,
              device: torch.device | str | None = None) -> ModelState:
        """The state at a sequence start."""
        return cls(
            conv=[torch.zeros(batch_size, d_inner, d_conv - 1, device=device)
                  for _ in range(n_layer)],
            ssm=[torch.zeros(batch_size, d_inner, d_state, device=device)
                 for _ in range(n_layer)],
        )

    @property
    def n_layer(self) -> int:
        return len(self.ssm)

    @property
    def batch_size(self) -> int:
        return self.ssm[0].shape[0]

    def detach(self) -> ModelState:
        """The same values cut from the autograd graph (truncated backpropagation)."""
        return ModelState([c.detach() for c in self.conv], [s.detach() for s in self.ssm])

    def to(self, *args, **kwargs) -> ModelState:
        """``Tensor.to`` on every tensor (device moves; dtypes other than fp32 are discouraged)."""
        return ModelState([c.to(*args, **kwargs) for c in self.conv],
                          [s.to(*args, **kwargs) for s in self.ssm])

    def select(self, index: torch.Tensor | list[int] | slice) -> ModelState:
        """The state of some batch rows (e.g. the sequences still running)."""
        return ModelState([c[index] for c in self.conv], [s[index] for s in self.ssm])

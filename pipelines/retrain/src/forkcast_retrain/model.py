"""The RankNet of SPEC §3, exactly, as a ``torch.nn.Module``.

The layers are fixed by the contract (the serving side and old artifacts rely on them); speed comes from
computing through them differently (``fastpath``), never from changing them.
"""

from __future__ import annotations

import torch
from torch import nn

from forkcast_contract.model_format import RANKNET_HIDDEN1, RANKNET_HIDDEN2, RANKNET_INPUT_DIM


class RankNet(nn.Module):
    """``Sequential(Linear(40, 256), Linear(256, 128), ReLU(), Linear(128, 1))``; forward returns the logit."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(RANKNET_INPUT_DIM, RANKNET_HIDDEN1),
            nn.Linear(RANKNET_HIDDEN1, RANKNET_HIDDEN2),
            nn.ReLU(),
            nn.Linear(RANKNET_HIDDEN2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x).squeeze(-1)
        return logits


def build_model(seed: int) -> RankNet:
    """A RankNet with PyTorch's default initialisation drawn from ``seed`` (same seed, same weights)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = RankNet()
    torch.random.set_rng_state(gen_state)
    return model


def build_optimizer(model: RankNet, lr: float, fused: bool = True) -> torch.optim.Adam:
    """Adam over the real parameters. ``fused`` runs the update as one kernel over all tensors.

    Measured on the 2-core VM (bench_train, batch 4096): the per-step optimizer cost matters once the fast
    path has made the math cheap, and the fused CPU kernel is the cheapest of the three Adam implementations.
    """
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)

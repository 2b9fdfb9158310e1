"""Weight-space ensembling of a fine-tune with its init (WiSE-FT, Wortsman et al., CVPR 2022).

theta = theta_init + alpha * (theta_fine_tuned - theta_init), parameter by parameter. A fine-tune on a
round's committed data learns the new domain and concepts but drifts away from what the init knew; the
interpolated weights keep most of both, because fine-tunes from one init stay in a linearly connected
basin. alpha = 1 is the plain fine-tune, 0 the init. Only floating-point tensors are interpolated.
"""

from __future__ import annotations

import torch
from torch import nn


def interpolate_towards(model: nn.Module, init_state: dict[str, torch.Tensor], alpha: float) -> None:
    """Move `model` (the fine-tune) in place to init + alpha * (fine-tune - init)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"merge alpha must be in [0, 1], got {alpha!r}")
    state = model.state_dict()
    missing = sorted(set(state) - set(init_state))
    if missing:
        raise ValueError(
            f"cannot merge with the init checkpoint: it lacks {len(missing)} tensor(s) of the fine-tune, "
            f"e.g. {missing[:3]} (was it trained from another architecture?)"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            if tensor.is_floating_point():
                tensor.copy_(torch.lerp(init_state[name].to(tensor.device, tensor.dtype), tensor, alpha))

import pytest
import torch
from torch import nn

from conceptengine.model.weight_merge import interpolate_towards


class _Net(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        nn.init.constant_(self.linear.weight, value)
        nn.init.constant_(self.linear.bias, value)
        self.register_buffer("count", torch.tensor(7, dtype=torch.long))


def test_alpha_interpolates_every_float_tensor_between_init_and_fine_tune():
    init = _Net(0.0).state_dict()
    for alpha, expected in [(0.0, 0.0), (0.5, 2.0), (1.0, 4.0)]:
        tuned = _Net(4.0)
        tuned.count.fill_(9)
        interpolate_towards(tuned, init, alpha)
        assert torch.allclose(tuned.linear.weight, torch.full((2, 2), expected))
        assert torch.allclose(tuned.linear.bias, torch.full((2,), expected))
        assert int(tuned.count) == 9  # integer buffers are not weights: the fine-tune's stay


def test_alpha_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="merge alpha must be in"):
        interpolate_towards(_Net(1.0), _Net(0.0).state_dict(), 1.5)


def test_init_from_another_architecture_names_what_it_lacks():
    init = {"linear.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="lacks 2 tensor"):
        interpolate_towards(_Net(1.0), init, 0.5)

"""Dead ReLU units (pointdistiller.engine.health) on hand-built layers whose dead channels are known."""
import torch
from torch import nn

from pointdistiller.engine.health import UnitActivity


def _conv_model():
    """Four channels of a 1x1 conv on a one-channel map: x, -x, -1 (always dead) and x - 10."""
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0, 1.0]).view(4, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.0, -1.0, -10.0]))
    return nn.Sequential(conv, nn.ReLU())


def test_dead_channels_of_a_map_and_their_accumulation():
    model = _conv_model()
    positive = torch.rand(2, 1, 5, 7) + 0.1           # in [0.1, 1.1): channels 1, 2, 3 never fire
    with UnitActivity(model) as units:
        model(positive)
        assert units.dead() == {"1": (3, 4)}
        model(-positive)                              # now channel 1 fires, channel 0 does not
    assert units.dead() == {"1": (2, 4)}              # channel 0 fired before: alive
    assert units.summary() == {"dead": 2, "total": 4, "layers": {"1": 2}}


def test_one_positive_element_keeps_a_unit_alive():
    model = _conv_model()
    x = torch.full((1, 1, 4, 4), -0.5)
    x[0, 0, 3, 2] = 10.5                              # channel 3 (x - 10) fires at one pixel only
    with UnitActivity(model) as units:
        model(x)
    assert units.dead() == {"1": (1, 4)}              # channel 2 alone stays dead


def test_point_features_channels_are_dimension_1():
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
        lin.bias.copy_(torch.tensor([0.0, 0.0, -5.0]))
    model = nn.Sequential(lin, nn.ReLU(inplace=True), nn.Linear(3, 2), nn.ReLU())
    x = torch.rand(50, 3)                             # [N, C]: channel 2 is x - 5 < 0 everywhere
    with UnitActivity(model) as units:
        model(x)
    dead = units.dead()
    assert dead["1"] == (1, 3)
    assert dead["3"][1] == 2


def test_hooks_are_removed_on_exit_and_counts_kept():
    model = _conv_model()
    with UnitActivity(model) as units:
        model(torch.rand(1, 1, 3, 3) + 0.1)
    assert all(not m._forward_hooks for m in model.modules())
    model(-torch.ones(1, 1, 3, 3))                    # would revive channel 1 if still hooked
    assert units.dead() == {"1": (3, 4)}


def test_a_model_without_relu_reports_nothing():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    with UnitActivity(model) as units:
        model(torch.rand(4, 3))
    assert units.summary() == {"dead": 0, "total": 0, "layers": {}}


def test_a_module_applied_at_two_widths_is_counted_per_width():
    relu = nn.ReLU()
    with UnitActivity(nn.Sequential(relu)) as units:
        relu(torch.tensor([[1.0, -1.0, 2.0]]))                 # 3 channels, channel 1 dead
        relu(torch.tensor([[-1.0, -1.0, 1.0, 1.0, 1.0]]))      # 5 channels, channels 0-1 dead
        relu(torch.tensor([[-1.0, 3.0, -1.0]]))                # the 3-wide call again: 1 fires
    assert units.dead() == {"0[3]": (0, 3), "0[5]": (2, 5)}

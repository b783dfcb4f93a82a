"""The layer protocol's per-channel noise (noiseattack/norms.py): `set_noise` with two 1-D tensors of a
layer's `noise_channels` values, through the constant attack's reach and affine fold; every registered
layer takes it, and a layer that cannot is refused in one line."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from noiseattack import zoo
from noiseattack.config import ConfigError
from noiseattack.norms import per_channel_noise, reach_noise


@pytest.mark.parametrize("name", [r["name"] for r in zoo.describe_layers()])
def test_every_registered_layer_takes_per_channel_noise_as_the_constant_attack_folds_it(name):
    """Per-channel tensors all equal to (2, 1) give exactly what the constant attack (2, 1) gives, in
    training and eval, for each of the registered layers (`noiseattack norms`); and noise that
    differs per channel changes the output."""
    torch.manual_seed(0)
    layer = zoo.make_norm(name, 16)
    constant = copy.deepcopy(layer)
    assert reach_noise(constant, 2.0, 1.0) > 0
    noise = per_channel_noise(layer)
    noise[0].fill_(2.0)
    noise[1].fill_(1.0)
    x = torch.randn(4, 16, 8, 8)
    for training in (True, False):
        layer.train(training), constant.train(training)
        torch.manual_seed(1)
        got = layer(x)
        torch.manual_seed(1)
        torch.testing.assert_close(got, constant(x), rtol=1e-5, atol=1e-5)
    layer.train()
    noise[0].uniform_(0.5, 1.5)
    noise[1].uniform_(-1.0, 1.0)
    assert torch.isfinite(layer(x)).all() and not torch.allclose(layer(x), constant(x))


class SetNoiseWithoutChannels(nn.Module):
    """A user's layer that takes the constant attack only (numbers), as scripts/example_layers.py does."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha, self.beta = 1.0, 0.0

    def set_noise(self, alpha, beta):
        self.alpha, self.beta = alpha, beta

    def forward(self, x):
        return self.alpha * F.instance_norm(x) + self.beta


def test_a_layer_without_noise_channels_is_refused_clearly():
    with pytest.raises(ConfigError, match="takes the constant attack but not per-channel noise"):
        per_channel_noise(nn.Sequential(SetNoiseWithoutChannels(4)))


def test_a_user_layer_without_noise_channels_is_refused_by_the_contract_check():
    with pytest.raises(ConfigError, match="layer 'test_per_channel_noise:SetNoiseWithoutChannels@.*not per-channel"):
        zoo.check_layers((zoo.resolve("test_per_channel_noise:SetNoiseWithoutChannels").name,), reach="per-channel")
    zoo.check_layers((zoo.resolve("test_per_channel_noise:SetNoiseWithoutChannels").name,), reach="constant")


"""VGG16 for 32x32 inputs (CIFAR), with or without BatchNorm, as in the curve-finding and
simplex papers' experiments."""

import torch
from torch import nn

from simplexkern import _checks

_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    def __init__(
        self, num_classes: int = 10, batch_norm: bool = False, in_channels: int = 3, width: float = 1.0
    ) -> None:
        """``width`` scales every layer's channels (at least 1 each): 1/16, 1/8, ... for small
        versions of the same layout."""
        super().__init__()
        _checks.number(width, "width", above=0)
        layers, c = [], in_channels
        for v in _CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            v = max(1, round(v * width))
            layers.append(nn.Conv2d(c, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        hidden = max(1, round(512 * width))
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(c, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

"""Wide ResNet for 32x32 inputs (Zagoruyko & Komodakis 2016); WRN-28-10 by default."""

import torch
from torch import nn


class _WideBlock(nn.Module):
    def __init__(self, c_in, c, stride, dropout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c, 3, 1, 1)
        self.dropout = nn.Dropout(dropout)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, stride, 1)
        self.relu = nn.ReLU()
        self.shortcut = nn.Conv2d(c_in, c, 1, stride) if stride != 1 or c_in != c else None

    def forward(self, x):
        out = self.dropout(self.conv1(self.relu(self.bn1(x))))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + (self.shortcut(x) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(
        self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4, got {depth}")
        n, widths = (depth - 4) // 6, [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1)
        stages, c_in = [], 16
        for i, c in enumerate(widths):
            stages.append(
                nn.Sequential(
                    *[_WideBlock(c_in if j == 0 else c, c, 2 if i and not j else 1, dropout) for j in range(n)]
                )
            )
            c_in = c
        self.layer1, self.layer2, self.layer3 = stages
        self.bn, self.relu = nn.BatchNorm2d(c_in), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(self.relu(self.bn(x))).flatten(1))

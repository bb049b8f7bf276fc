"""Pre-activation ResNets for 32x32 inputs (He et al. 2016), as in the curve-finding
paper's code: depth >= 44 uses bottleneck blocks (depth = 9n + 2: PreResNet-110 and -164),
shallower ones basic blocks (depth = 6n + 2)."""

import torch
from torch import nn


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, c_in, c, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Conv2d(c_in, c, 1, stride, bias=False) if stride != 1 or c_in != c else None

    def forward(self, x):
        out = self.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + skip


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, c, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(c), nn.Conv2d(c, c * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Conv2d(c_in, c * 4, 1, stride, bias=False) if stride != 1 or c_in != c * 4 else None

    def forward(self, x):
        out = self.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + skip


class PreResNet(nn.Module):
    def __init__(self, depth: int = 110, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        block, per = (_Bottleneck, 9) if depth >= 44 else (_Basic, 6)
        if depth < 8 or (depth - 2) % per:
            raise ValueError(f"depth must be 6n + 2 below 44 or 9n + 2 from 44 on, got {depth}")
        n = (depth - 2) // per
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, c_in = [], 16
        for i, c in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, c, 2 if i and not j else 1))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn, self.relu = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(self.relu(self.bn(x))).flatten(1))

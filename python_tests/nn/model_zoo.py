"""Small models for the simplex-model tests, one of every supported layer."""
import torch
from torch import nn


class EveryLayer(nn.Module):
    """Conv2d, BatchNorm2d, GroupNorm, Conv1d, BatchNorm1d, Embedding, LayerNorm, Linear, a
    residual add, pooling and flatten in the forward code."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.conv1d = nn.Conv1d(4, 3, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm1d(3)
        self.emb = nn.Embedding(7, 6, padding_idx=0)
        self.ln = nn.LayerNorm(6)
        self.fc = nn.Linear(3 * 8 + 6, 5)

    def forward(self, x):
        img, tokens = x[:, :32].reshape(-1, 2, 4, 4), x[:, 32:].long()
        h = torch.relu(self.bn2(self.conv(img)))
        h = self.gn(h) + h
        h = torch.relu(self.bn1(self.conv1d(h.flatten(2))))  # (N, 3, 8)
        e = self.ln(self.emb(tokens)).mean(1)
        return self.fc(torch.cat([h.flatten(1), e], 1))


def every_layer_input(batch, generator, dtype=torch.float32):
    img = torch.randn(batch, 32, generator=generator, dtype=dtype)
    tokens = torch.randint(0, 7, (batch, 3), generator=generator).to(dtype)
    return torch.cat([img, tokens], 1)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention and MLP, attention written with Linear layers."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ln2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim))

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.ln2(x))

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


# Models whose forward code does what the points of a simplex model must not be mixed by:
# tokens flattened into the batch, tensors made inside forward, sequence-first layouts,
# per-example indexing, weight ties written in forward, and layers without a fused form.


class TokenFlatten(nn.Module):
    """Flattens tokens into the batch before a Linear, as many transformer codebases do."""

    def __init__(self, dim=6):
        super().__init__()
        self.a, self.b = nn.Linear(4, dim), nn.Linear(dim, 3)

    def forward(self, x):  # (B, T, 4)
        B, T, _ = x.shape
        h = torch.tanh(self.a(x)).reshape(B * T, -1)
        return self.b(h).view(B, T, -1)


class MadeInForward(nn.Module):
    """Layers applied to tensors the forward makes: positions from torch.arange and a grid
    from torch.linspace."""

    def __init__(self, dim=5, length=7):
        super().__init__()
        self.pos, self.grid, self.out = nn.Embedding(length, dim), nn.Linear(1, dim), nn.Linear(dim, 2)

    def forward(self, x):  # (B, T, dim)
        T = x.shape[1]
        h = x + self.pos(torch.arange(T)) + self.grid(torch.linspace(0, 1, T, dtype=x.dtype)[:, None])
        return self.out(torch.relu(h))


class SequenceFirst(nn.Module):
    """nn.TransformerEncoderLayer with its default (T, B, C) layout, and per-example indexing."""

    def __init__(self, dim=8):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):  # (B, T, dim)
        h = self.layer(x.transpose(0, 1)).transpose(0, 1)
        last = torch.arange(x.shape[0]) % x.shape[1]  # a different position per example
        return self.head(h[torch.arange(x.shape[0]), last])


class GPT(nn.Module):
    """nanoGPT-style, with nn.MultiheadAttention and a causal mask made in forward, and the
    head tied to the token embedding in the forward code (x @ tok.weight.T)."""

    def __init__(self, vocab=11, dim=8, length=6):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(length, dim)
        self.ln1, self.attn = nn.LayerNorm(dim), nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, idx):  # (B, T) token ids
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T))
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return x @ self.tok.weight.T


class Recurrent(nn.Module):
    """An LSTM classifier over embedded tokens, and a GRU over the LSTM's states."""

    def __init__(self, vocab=9, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, 5, num_layers=2, batch_first=True)
        self.gru = nn.GRU(5, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, idx):
        h, _ = self.lstm(self.emb(idx))
        out, last = self.gru(h.transpose(0, 1))
        return self.head(last[-1] + out.mean(0))


class Decoder(nn.Module):
    """A ConvTranspose decoder: Linear -> view -> ConvTranspose2d / BatchNorm2d / ConvTranspose1d."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4 * 3 * 3)
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.out = nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.line = nn.ConvTranspose1d(2, 1, 3, stride=2)

    def forward(self, z):
        h = torch.relu(self.bn(self.up(self.fc(z).view(-1, 4, 3, 3))))
        img = self.out(h)  # (B, 2, 12, 12)
        return self.line(img.flatten(2)[..., :20])


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt kind: a LayerNorm subclass over channels with its own forward."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class OwnParameters(nn.Module):
    """Parameters held directly by a module (a class token and positions, as ViT), a LayerNorm
    subclass, InstanceNorm2d with affine, Conv3d and a reflect-padded Conv2d."""

    def __init__(self, dim=4):
        super().__init__()
        self.conv = nn.Conv2d(2, dim, 3, padding=1, padding_mode="reflect")
        self.norm = LayerNorm2d(dim)
        self.inorm = nn.InstanceNorm2d(dim, affine=True)
        self.conv3 = nn.Conv3d(1, 2, (2, 3, 3), padding=(0, 1, 1))
        self.class_token = nn.Parameter(torch.randn(1, 1, 2 * dim))
        self.positions = nn.Parameter(torch.randn(1, 1 + 16, 2 * dim) * 0.1)
        self.head = nn.Linear(2 * dim, 3)

    def forward(self, x):  # (B, 2, 4, 4)
        h = self.inorm(torch.relu(self.norm(self.conv(x))))  # (B, dim, 4, 4)
        h = self.conv3(h[:, None, :2]).flatten(1, 2)  # (B, 2 * 1, 4, 4) -> pad to 2 * dim channels
        h = torch.cat([h, h.flip(1), h * h, h.tanh()], 1)[:, : self.class_token.shape[-1]]
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), h.flatten(2).transpose(1, 2)], 1)
        return self.head((tokens + self.positions)[:, 0] + tokens.mean(1))


class Pools(nn.Module):
    """Pooling layers of every kind, on activations laid out as the fused convolutions leave
    them (the points example-major), as vmap's own rules leave them (point-major, after a
    cat), on an unbatched example and on the input itself (no point dimension)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1)
        self.pool1 = nn.Sequential(nn.MaxPool1d(2), nn.AvgPool1d(2), nn.AdaptiveMaxPool1d(3), nn.AdaptiveAvgPool1d(2))
        self.pool2 = nn.Sequential(
            nn.MaxPool2d(2), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveMaxPool2d(2), nn.AdaptiveAvgPool2d(1)
        )
        self.max2 = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 2 + 4 + 8 * 4 * 4 + 4 * 4 * 4 + 2 * 4 * 4, 3)

    def forward(self, x):  # (B, 2, 8, 8)
        h = torch.tanh(self.conv2(x))
        pooled = [
            self.pool1(self.conv1(x.flatten(2))).flatten(1),
            self.pool2(h).flatten(1),
            self.max2(torch.cat([h, -h], 1)).flatten(1),
            self.max2(h[0]).flatten().expand(x.shape[0], -1),
            self.max2(x).flatten(1),
        ]
        return self.head(torch.cat(pooled, 1))

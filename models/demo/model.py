"""Why: one definition of the demo decoder, shared by training, export and the checks, so the ONNX
graph is exactly the network that was trained.

GPT-2 style: learned token + position embeddings, pre-LayerNorm blocks, GELU MLP, tied output head.
`forward` takes the Hugging Face Optimum "with past" inputs (input_ids, attention_mask, position_ids,
past key/value per layer as [batch, heads, past, head_dim]) and returns logits plus the new cache.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 4096
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    max_positions: int = 256
    dropout: float = 0.1

    def to_dict(self):
        return asdict(self)


CONFIGS = {
    'target': Config(n_layer=4, n_head=4, d_model=256),
    'draft': Config(n_layer=1, n_head=2, d_model=96),
}


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c.n_head
        self.scale = 1.0 / math.sqrt(c.d_model // c.n_head)
        self.ln_1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ln_2 = nn.LayerNorm(c.d_model)
        self.fc = nn.Linear(c.d_model, 4 * c.d_model)
        self.fc_out = nn.Linear(4 * c.d_model, c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, bias, past_key, past_value):
        b, t, d = x.shape
        h = self.n_head
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        if past_key is not None:
            k = torch.cat([past_key, k], dim=2)
            v = torch.cat([past_value, v], dim=2)
        att = (q @ k.transpose(-2, -1)) * self.scale + bias
        y = F.softmax(att, dim=-1) @ v
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln_2(x)))))
        return x, k, v


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = nn.Embedding(c.max_positions, c.d_model)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith('proj.weight') or name.endswith('fc_out.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        """Logits [batch, seq, vocab] and the present key/values (one (key, value) per layer)."""
        b, t = input_ids.shape
        past_len = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, dtype=torch.long).unsqueeze(0)
        total = past_len + t
        # Query i (absolute position past_len + i) sees keys 0 … past_len + i, and only unmasked ones.
        q_pos = torch.arange(total - t, total).unsqueeze(1)
        k_pos = torch.arange(0, total).unsqueeze(0)
        allowed = k_pos <= q_pos
        if attention_mask is not None:
            allowed = allowed.unsqueeze(0) & attention_mask.bool().unsqueeze(1)
            allowed = allowed.unsqueeze(1)
        bias = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))
        presents = []
        for i, block in enumerate(self.blocks):
            pk, pv = (None, None) if past is None else past[i]
            x, k, v = block(x, bias, pk, pv)
            presents.append((k, v))
        logits = self.ln_f(x) @ self.wte.weight.t()
        return logits, presents

    def loss(self, input_ids, targets):
        logits, _ = self.forward(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

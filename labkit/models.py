"""Tiny models that train in seconds on a laptop CPU.

They only consume tensors (input_ids, attention_mask, position_ids); which task they learn is
decided by the batch and the loss.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.checks import ContractError


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x [B,T,d]; allowed bool [B,1,T,T] (True = query may attend key)."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(attn.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Token + learned absolute position embeddings, n pre-norm blocks, tied output head.

    forward(input_ids [B,T], attention_mask [B,T] (1 = real token) or [B,T,T] bool (True = may
    attend), position_ids [B,T] (default: arange)) -> logits [B,T,V].
    causal=True adds the causal mask; window=L lets each position read only itself and the L-1
    tokens before it (a finite context of L tokens).
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 64, causal: bool = True, window: int | None = None, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ContractError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if window is not None and window < 1:
            raise ContractError(f"window must be >= 1 token, got {window}")
        self.vocab_size, self.max_len, self.causal, self.window = vocab_size, max_len, causal, window
        self.d_model = d_model
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init)

    @property
    def context_length(self) -> int:
        """How many tokens (itself included) a position can be influenced by: each layer reaches
        window-1 tokens further back, so n_layers * (window - 1) + 1; max_len without a window."""
        if self.window is None:
            return self.max_len
        return len(self.blocks) * (self.window - 1) + 1

    def _init(self, module):
        """Linear weights ~ N(0, 1/d_model), embeddings ~ N(0, 0.3^2). Larger than GPT-2's 0.02:
        with tiny widths, 0.02 leaves attention uniform for hundreds of steps (a plateau at the
        unigram loss), which a bidirectional masked LM in particular cannot escape quickly."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.d_model ** -0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.3)

    def allowed_mask(self, attention_mask: torch.Tensor | None, B: int, T: int, device) -> torch.Tensor:
        """Bool [B,1,T,T]: causal/window structure AND the given mask; the diagonal is always open
        so a padding query (masked everywhere) still has one key and stays finite."""
        allowed = torch.ones(T, T, dtype=torch.bool, device=device)
        if self.causal:
            allowed = allowed.tril()
        if self.window is not None:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=device).triu(-(self.window - 1))
        allowed = allowed.expand(B, T, T)
        if attention_mask is not None:
            if attention_mask.dim() == 2:
                if attention_mask.shape != (B, T):
                    raise ContractError(f"attention_mask {tuple(attention_mask.shape)} does not match input_ids {(B, T)}")
                allowed = allowed & attention_mask.bool()[:, None, :]
            elif attention_mask.dim() == 3:
                if attention_mask.shape != (B, T, T):
                    raise ContractError(f"a 3-D attention_mask must be [B,T,T]={(B, T, T)}, got {tuple(attention_mask.shape)}")
                allowed = allowed & attention_mask.bool()
            else:
                raise ContractError(f"attention_mask must be [B,T] or [B,T,T], got {tuple(attention_mask.shape)}")
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=device)
        return allowed[:, None]

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        """[B,T] ids -> [B,T,d] final hidden states (after the last LayerNorm)."""
        if input_ids.dim() != 2:
            raise ContractError(f"input_ids must be [B,T], got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        if position_ids.shape != (B, T):
            raise ContractError(f"position_ids {tuple(position_ids.shape)} must match input_ids {(B, T)}")
        if int(position_ids.max()) >= self.max_len or int(position_ids.min()) < 0:
            raise ContractError(f"position ids must lie in [0, max_len={self.max_len}); got max {int(position_ids.max())}. "
                                "Fix: shorter sequences, positions from the attention mask, or a larger max_len")
        if int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0:
            raise ContractError(f"input ids must lie in [0, vocab_size={self.vocab_size}); fix: build the model with len(tokenizer)")
        x = self.tok(input_ids) + self.pos(position_ids)
        allowed = self.allowed_mask(attention_mask, B, T, input_ids.device)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        return self.hidden_states(input_ids, attention_mask, position_ids) @ self.tok.weight.T


class TinyCausalLM(TinyTransformer):
    """Decoder-only LM: each position reads itself and what came before (and only `window` tokens
    of it when window is set)."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 64, window: int | None = None, dropout: float = 0.0):
        super().__init__(vocab_size, d_model, n_layers, n_heads, max_len, causal=True, window=window, dropout=dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

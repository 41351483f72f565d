"""Tiny models that train in seconds on a laptop CPU.

They only consume tensors (input_ids, attention_mask, position_ids); which task they learn is
decided by the batch and the loss.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.contracts import ContractError, count, positive, tensor, token_ids

POSITION_KINDS = ("learned", "rope")


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each [B,1,T,head_dim] (float32), for apply_rope.

    angle[b,t,i] = position_ids[b,t] * base^(-2i/head_dim), i < head_dim/2, repeated for the two
    halves (the rotate-half layout of GPT-NeoX / LLaMA in transformers).
    """
    position_ids = tensor(position_ids, "position_ids")
    head_dim, base = count(head_dim, "head_dim", minimum=2), positive(base, "rope base")
    if head_dim % 2:
        raise ContractError(f"rotary positions rotate pairs of dimensions: head_dim must be even, got {head_dim}; fix: "
                            "choose d_model / n_heads even")
    if position_ids.dim() != 2:
        raise ContractError(f"position_ids must be [B,T], got {tuple(position_ids.shape)}")
    inv_freq = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim)
    angles = position_ids.float()[..., None] * inv_freq                      # [B,T,head_dim/2]
    angles = torch.cat([angles, angles], -1)[:, None]                        # [B,1,T,head_dim]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, position_ids: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys by their positions: x [B,H,T,d] (d even), position_ids [B,T] -> [B,H,T,d].

    Dimension pair (i, i + d/2) of the token at position p turns by the angle p * base^(-2i/d):
    x' = x cos + rotate_half(x) sin, rotate_half(x) = (-x2, x1). Then q'_m . k'_n depends on m - n
    only, so shifting every position of a row by one constant leaves its attention scores unchanged.
    """
    x = tensor(x, "x")
    if x.dim() != 4 or not x.is_floating_point():
        raise ContractError(f"apply_rope rotates float queries/keys [B,H,T,d], got {x.dtype} {tuple(x.shape)}; fix: pass "
                            "the projected queries or keys of every head, q.view(B, T, H, d).transpose(1, 2)")
    position_ids = tensor(position_ids, "position_ids")
    if position_ids.shape != (x.shape[0], x.shape[2]):
        raise ContractError(f"position_ids {tuple(position_ids.shape)} must be [B,T] = {(x.shape[0], x.shape[2])} "
                            "for x [B,H,T,d]; fix: one position per token of each row")
    cos, sin = rope_cos_sin(position_ids, x.shape[-1], base)
    return _rotate(x, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x.float() * cos + rotated_half.float() * sin).to(x.dtype)


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

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, rope=None) -> torch.Tensor:
        """x [B,T,d]; allowed bool [B,1,T,T] (True = query may attend key); rope: None or the
        (cos, sin) of rope_cos_sin, which rotate q and k of every head by their positions."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(attn.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))

    def forward_cached(self, x: torch.Tensor, allowed: torch.Tensor, past=None, rope=None):
        """The same block over S new tokens with a key/value cache.

        x [B,S,d]; allowed bool [B,1,S,P+S] over the P cached keys and the S new ones; past: None
        or (k, v), each [B,H,P,d/H] (keys cached already rotated); rope: None or the (cos, sin) of
        the S new tokens. Returns (x_out [B,S,d], (k, v) of all P+S tokens).
        """
        B, S, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, S, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.proj(attn.transpose(1, 2).reshape(B, S, d))
        return x + self.mlp(self.ln2(x)), (k, v)


class TinyTransformer(nn.Module):
    """Token embeddings, positions, n pre-norm blocks, tied output head.

    forward(input_ids [B,T], attention_mask [B,T] (1 = real token) or [B,T,T] bool (True = may
    attend), position_ids [B,T] (default: arange)) -> logits [B,T,V].
    causal=True adds the causal mask; window=L lets each position read only itself and the L-1
    tokens before it (a finite context of L tokens).
    positions="learned" (default): a learned absolute embedding per position id is added to the
    token embedding (a table of max_len rows). positions="rope": no position embedding; every
    block rotates its queries and keys by their position ids (apply_rope, base rope_base), so
    attention scores depend on position differences only. max_len bounds the position ids either way.
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 64, causal: bool = True, window: int | None = None, dropout: float = 0.0,
                 positions: str = "learned", rope_base: float = 10000.0):
        super().__init__()
        vocab_size, d_model, n_layers = count(vocab_size, "vocab_size"), count(d_model, "d_model"), count(n_layers, "n_layers")
        n_heads, max_len = count(n_heads, "n_heads"), count(max_len, "max_len")
        if d_model % n_heads:
            raise ContractError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if window is not None and window < 1:
            raise ContractError(f"window must be >= 1 token, got {window}")
        if positions not in POSITION_KINDS:
            raise ContractError(f"unknown positions {positions!r}; fix: one of {POSITION_KINDS}")
        if positions == "rope" and (d_model // n_heads) % 2:
            raise ContractError(f"rotary positions rotate pairs of dimensions: the head size d_model / n_heads = "
                                f"{d_model // n_heads} must be even; fix: change d_model or n_heads")
        self.vocab_size, self.max_len, self.causal, self.window = vocab_size, max_len, causal, window
        self.d_model, self.positions, self.rope_base = d_model, positions, positive(rope_base, "rope_base")
        self.head_dim = d_model // n_heads
        self.tok = nn.Embedding(vocab_size, d_model)
        if positions == "learned":
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
        input_ids = token_ids(input_ids, "input_ids")
        if attention_mask is not None:
            attention_mask = tensor(attention_mask, "attention_mask")
        if position_ids is not None:
            position_ids = tensor(position_ids, "position_ids")
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
        x, rope = self._embed(input_ids, position_ids)
        allowed = self.allowed_mask(attention_mask, B, T, input_ids.device)
        for block in self.blocks:
            x = block(x, allowed, rope)
        return self.ln_f(x)

    def _embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor):
        """(token embeddings [+ learned position embeddings] [B,T,d], rope (cos, sin) or None)."""
        if self.positions == "learned":
            return self.tok(input_ids) + self.pos(position_ids), None
        return self.tok(input_ids), rope_cos_sin(position_ids, self.head_dim, self.rope_base)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        return self.hidden_states(input_ids, attention_mask, position_ids) @ self.tok.weight.T

    def forward_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                       past: list | None = None) -> tuple[torch.Tensor, list]:
        """Incremental decoding with a key/value cache (causal models without a window).

        input_ids [B,S]: the new tokens (the whole left-padded prompt on the first call, then one
        token per step); attention_mask [B,P+S] (1 = real) over the P cached tokens and the S new
        ones; position_ids [B,S]: where the new tokens sit, required because the cache cannot
        know it: a row's next position is its own number of real tokens, not the padded length.
        past: None, or the list of per-layer (k, v) a previous call returned.
        Returns (logits [B,S,V], past). Query i may read cached/new key j when j <= P+i and key j
        is real; its own key is always open (as in forward).
        """
        if not self.causal or self.window is not None:
            raise ContractError("forward_cached needs a causal model without a sliding window; fix: call forward() on the whole prefix")
        if input_ids.dim() != 2 or position_ids is None or position_ids.shape != input_ids.shape:
            raise ContractError(f"forward_cached needs input_ids [B,S] and position_ids of the same shape, got "
                                f"{tuple(input_ids.shape)} and {None if position_ids is None else tuple(position_ids.shape)}")
        B, S = input_ids.shape
        P = 0 if past is None else past[0][0].shape[2]
        if past is not None and len(past) != len(self.blocks):
            raise ContractError(f"past holds {len(past)} layers, the model has {len(self.blocks)}; fix: pass back what the previous call returned")
        if attention_mask is None or tuple(attention_mask.shape) != (B, P + S):
            raise ContractError(f"attention_mask must cover the {P} cached and {S} new tokens: [B, P+S] = {(B, P + S)}, got "
                                f"{None if attention_mask is None else tuple(attention_mask.shape)}; fix: append a 1 per new token")
        if int(position_ids.max()) >= self.max_len or int(position_ids.min()) < 0:
            raise ContractError(f"position ids must lie in [0, max_len={self.max_len}); got max {int(position_ids.max())}")
        dev = input_ids.device
        causal = torch.ones(S, P + S, dtype=torch.bool, device=dev).tril(P)
        own = torch.zeros(S, P + S, dtype=torch.bool, device=dev)
        own[torch.arange(S, device=dev), P + torch.arange(S, device=dev)] = True
        allowed = (causal[None] & attention_mask.bool()[:, None, :]) | own[None]
        x, rope = self._embed(input_ids, position_ids)
        new_past = []
        for block, kv in zip(self.blocks, past if past is not None else [None] * len(self.blocks)):
            x, kv = block.forward_cached(x, allowed[:, None], kv, rope)
            new_past.append(kv)
        return self.ln_f(x) @ self.tok.weight.T, new_past


class TinyCausalLM(TinyTransformer):
    """Decoder-only LM: each position reads itself and what came before (and only `window` tokens
    of it when window is set). positions="learned" (default) or "rope" (see TinyTransformer)."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 64, window: int | None = None, dropout: float = 0.0, positions: str = "learned",
                 rope_base: float = 10000.0):
        super().__init__(vocab_size, d_model, n_layers, n_heads, max_len, causal=True, window=window, dropout=dropout,
                         positions=positions, rope_base=rope_base)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class MLPClassifier(nn.Module):
    """x [B, in_dim] -> logits [B, n_classes] through hidden layers (Linear + GELU each).

    hidden=() gives a linear (softmax regression) model."""

    def __init__(self, in_dim: int, n_classes: int, hidden: tuple[int, ...] = (64,), dropout: float = 0.0):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ContractError(f"an MLP classifier needs in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.n_classes = in_dim, n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ContractError(f"MLPClassifier expects [B, {self.in_dim}] features, got {tuple(x.shape)}; fix: flatten images")
        return self.net(x)


class DualEncoder(nn.Module):
    """Two towers into one embedding space (a tiny CLIP).

    image tower: [B, image_dim] -> MLP -> [B, dim]; text tower: token ids [B, L] (pad_id = padding)
    -> mean of word embeddings (pads excluded) -> MLP -> [B, dim]. forward(images, captions) ->
    (image_emb, text_emb), unnormalised (the contrastive loss normalises).
    """

    def __init__(self, image_dim: int, vocab_size: int, dim: int = 32, hidden: int = 128, pad_id: int = 0):
        super().__init__()
        self.image_dim, self.vocab_size, self.pad_id = image_dim, vocab_size, pad_id
        self.image_tower = nn.Sequential(nn.Linear(image_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.words = nn.EmbeddingBag(vocab_size, hidden, mode="mean", padding_idx=pad_id)
        self.text_tower = nn.Sequential(nn.GELU(), nn.Linear(hidden, dim))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 2 or images.shape[1] != self.image_dim:
            raise ContractError(f"images must be [B, {self.image_dim}], got {tuple(images.shape)}")
        return self.image_tower(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ContractError(f"captions must be padded ids [B, L], got {tuple(ids.shape)}")
        if int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ContractError(f"caption ids must lie in [0, {self.vocab_size}); fix: build the model with len(tokenizer)")
        if ids.ne(self.pad_id).sum(-1).eq(0).any():
            raise ContractError("a caption has no real token (all padding): its mean embedding is undefined")
        return self.text_tower(self.words(ids))

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(captions)


class HFLogits(nn.Module):
    """A transformers causal LM behind TinyCausalLM's call signature, so labkit's decoding helpers
    (generate, continuation_logits, decode_agreement) can drive it.

    forward(input_ids [B,T], attention_mask=None, position_ids=None) -> logits [B,T,V].
    position_ids=None lets the wrapped model choose, as a plain forward would (a column index).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ContractError("HFLogits passes a [B,T] padding mask; transformers models build their own causal mask")
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

"""Contrastive learning: a batch of B matched pairs becomes a B-way classification per query.

s_ij = <q_i, k_j> / tau (cosine similarities when normalised), p_ij = softmax_j(s_ij),
L_i = -log p_{i, t_i} with target t_i = i (the matched key). d L_i / d s_ij = p_ij - 1[j = t_i]:
every negative j is pushed away with weight p_ij, so the most similar negatives (the hardest, and
same-meaning "false negatives") receive most of the repulsive gradient.

Negatives are a choice of the pipeline: the batch (in-batch negatives), the keys gathered from
every data-parallel rank, minus the keys known to share the query's meaning (false_negative_mask).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from labkit.contracts import ContractError, count, finite, positive
from labkit.dist import all_gather_no_grad, all_gather_with_grad, all_reduce_sum
from labkit.train import fit

GATHER_DESIGNS = ("with_grad", "no_grad", "detached", "local")
# what gathered_negatives_rank compares with the single-process full batch (see GATHER_RECIPES_HELP)
GATHER_RECIPES = ("with_grad", "openclip", "openclip_unscaled", "no_grad", "detached", "local")
GATHER_RECIPES_HELP = {
    "with_grad": "local queries x every rank's keys, gathered differentiably",
    "openclip": "no-grad gather, own slot replaced by the local features, full N x N loss, x R",
    "openclip_unscaled": "the same without the factor R",
    "no_grad": "local queries x keys gathered without grad, own slot replaced",
    "detached": "local queries x keys gathered without grad, own slot detached too",
    "local": "no gather: local queries x local keys",
}


def _check_pair(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.dim() != 2 or k.dim() != 2:
        raise ContractError(f"q and k must be [B,D] and [N,D] embeddings, got {tuple(q.shape)} and {tuple(k.shape)}; "
                            "fix: flatten the batch dimensions")
    if q.shape[1] != k.shape[1]:
        raise ContractError(f"q has dimension {q.shape[1]} but k has {k.shape[1]}: the two towers must project to one "
                            "shared embedding space")


def _check_temperature(temperature) -> float:
    t = finite(temperature, "temperature")
    if not t > 0:
        raise ContractError(f"temperature must be > 0, got {t}; fix: tau around 0.05-0.5 (CLIP learns 1/tau, clamped to <= 100)")
    return t


def similarity_logits(q: torch.Tensor, k: torch.Tensor, temperature: float, normalize: bool = True) -> torch.Tensor:
    """q [B,D], k [N,D] -> s [B,N], s_ij = <q_i, k_j> / tau (cosines / tau when normalize)."""
    _check_pair(q, k)
    t = _check_temperature(temperature)
    if normalize:
        q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
    return q.float() @ k.float().T / t


def default_targets(B: int, N: int, device=None) -> torch.Tensor:
    """The matched key of query i is key i: arange(B) (needs N >= B)."""
    if N < B:
        raise ContractError(f"{B} queries but only {N} keys: the diagonal target arange(B) needs N >= B; pass targets=")
    return torch.arange(B, device=device)


def _mask_logits(logits: torch.Tensor, targets: torch.Tensor, false_negative_mask: torch.Tensor | None) -> torch.Tensor:
    if false_negative_mask is None:
        return logits
    m = torch.as_tensor(false_negative_mask, device=logits.device)
    if m.shape != logits.shape:
        raise ContractError(f"false_negative_mask must be [B,N]={tuple(logits.shape)} like the logits, got {tuple(m.shape)}")
    if m.dtype != torch.bool:
        raise ContractError(f"false_negative_mask must be bool (True = drop this key from query i's negatives), got {m.dtype}")
    if m.gather(1, targets[:, None]).any():
        rows = m.gather(1, targets[:, None]).flatten().nonzero().flatten().tolist()
        raise ContractError(f"false_negative_mask removes the positive key of queries {rows[:5]}: the loss would have no "
                            "target. Fix: mask same-meaning keys except the matched one (same_class_mask excludes it)")
    return logits.masked_fill(m, float("-inf"))


def info_nce_from_logits(logits: torch.Tensor, targets: torch.Tensor | None = None,
                         false_negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of -log softmax(s_i)[t_i]: cross-entropy over the rows of s [B,N].

    false_negative_mask [B,N] bool: those keys leave the softmax of query i (logit -> -inf).
    """
    if logits.dim() != 2:
        raise ContractError(f"logits must be a [B,N] similarity matrix, got {tuple(logits.shape)}")
    B, N = logits.shape
    targets = default_targets(B, N, logits.device) if targets is None else torch.as_tensor(targets, device=logits.device)
    if targets.shape != (B,) or targets.dtype != torch.long:
        raise ContractError(f"targets must be int64 [B]={B} (the column of each query's positive), got {targets.dtype} {tuple(targets.shape)}")
    if int(targets.min()) < 0 or int(targets.max()) >= N:
        raise ContractError(f"targets must lie in [0, N={N}); got {targets.min().item()}..{targets.max().item()}. Fix: with keys "
                            "gathered from R ranks the target of local query i is rank * B_local + i")
    return F.cross_entropy(_mask_logits(logits, targets, false_negative_mask), targets)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float, symmetric: bool = False,
             false_negative_mask: torch.Tensor | None = None, targets: torch.Tensor | None = None,
             normalize: bool = True) -> torch.Tensor:
    """InfoNCE: q [B,D] queries, k [N,D] keys, query i's positive is key targets[i] (default i).

    L = mean_i -log( exp(s_{i,t_i}) / sum_j exp(s_ij) ),  s = similarity_logits(q, k, tau).
    symmetric=True (CLIP): (L(q->k) + L(k->q)) / 2, the second over the columns of s (needs N == B
    and the diagonal targets). false_negative_mask [B,N] bool removes same-meaning keys from each
    query's negatives (the transposed mask is used for the k->q direction).
    """
    logits = similarity_logits(q, k, temperature, normalize)
    B, N = logits.shape
    if not symmetric:
        return info_nce_from_logits(logits, targets, false_negative_mask)
    if N != B or (targets is not None and not torch.equal(torch.as_tensor(targets).cpu(), torch.arange(B))):
        raise ContractError("symmetric=True needs B matched pairs (N == B, targets = arange(B)); with gathered keys use "
                            "gathered_info_nce, which gathers both towers")
    mask_t = None if false_negative_mask is None else torch.as_tensor(false_negative_mask).T
    return 0.5 * (info_nce_from_logits(logits, None, false_negative_mask) + info_nce_from_logits(logits.T, None, mask_t))


def same_class_mask(labels_q: torch.Tensor, labels_k: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
    """The false negatives of each query: [B,N] bool, True where key j shares query i's label and is
    not its matched key (labels_q [B], labels_k [N], default labels_q; targets default arange(B))."""
    labels_q = torch.as_tensor(labels_q)
    labels_k = labels_q if labels_k is None else torch.as_tensor(labels_k)
    if labels_q.dim() != 1 or labels_k.dim() != 1:
        raise ContractError(f"labels must be 1-D, got {tuple(labels_q.shape)} and {tuple(labels_k.shape)}")
    B, N = len(labels_q), len(labels_k)
    labels_k = labels_k.to(labels_q.device)
    targets = default_targets(B, N, labels_q.device) if targets is None else torch.as_tensor(targets, device=labels_q.device)
    same = labels_q[:, None].eq(labels_k[None, :])
    same[torch.arange(B, device=same.device), targets] = False
    return same


def supcon_loss(q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, temperature: float, symmetric: bool = False,
                labels_k: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    """SupCon-style positives across two towers: every key with query i's label is a positive.

    L_i = -(1/|P(i)|) sum_{j in P(i)} log p_ij, p_ij = softmax over ALL keys (the 'L_out' form of
    Khosla et al.: positives are averaged outside the log, same-class keys stay in the denominator).
    P(i) = {j : labels_k[j] == labels[i]}, which includes the matched key. Mean over queries;
    symmetric=True averages with the k->q direction.
    """
    labels = torch.as_tensor(labels, device=q.device)
    labels_k = labels if labels_k is None else torch.as_tensor(labels_k, device=q.device)
    logits = similarity_logits(q, k, temperature, normalize)
    if labels.shape != (logits.shape[0],) or labels_k.shape != (logits.shape[1],):
        raise ContractError(f"labels must be [B]={logits.shape[0]} and labels_k [N]={logits.shape[1]}")

    def one_way(s, yq, yk):
        pos = yq[:, None].eq(yk[None, :]).to(s.dtype)
        if (pos.sum(1) == 0).any():
            raise ContractError("a query has no positive key (no key with its label); fix: include its matched key")
        return -((pos * s.log_softmax(-1)).sum(1) / pos.sum(1)).mean()

    if not symmetric:
        return one_way(logits, labels, labels_k)
    return 0.5 * (one_way(logits, labels, labels_k) + one_way(logits.T, labels_k, labels))


# ----------------------------------------------------------------------------- gradients

def contrastive_probs(logits: torch.Tensor, false_negative_mask: torch.Tensor | None = None,
                      targets: torch.Tensor | None = None) -> torch.Tensor:
    """p [B,N] = softmax over each row of s, masked keys get p = 0."""
    B, N = logits.shape
    targets = default_targets(B, N, logits.device) if targets is None else targets
    return _mask_logits(logits.detach().float(), targets, false_negative_mask).softmax(-1)


def logit_gradient(logits: torch.Tensor, targets: torch.Tensor | None = None,
                   false_negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The analytic d(mean_i L_i)/d s_ij = (p_ij - 1[j = t_i]) / B, [B,N]."""
    B, N = logits.shape
    targets = default_targets(B, N, logits.device) if targets is None else targets
    p = contrastive_probs(logits, false_negative_mask, targets)
    return (p - F.one_hot(targets, N).to(p.dtype)) / B


def repulsive_share(logits: torch.Tensor, same_meaning: torch.Tensor, targets: torch.Tensor | None = None,
                    false_negative_mask: torch.Tensor | None = None) -> float:
    """Share of the repulsive gradient that lands on same-meaning keys.

    The repulsive terms are the p_ij of the negatives (j != t_i); this returns
    sum_{i, j != t_i, same[i,j]} p_ij / sum_{i, j != t_i} p_ij. same_meaning [B,N] bool (e.g.
    same_class_mask(labels)). A false-negative mask sets those p_ij to 0, so the share drops to 0.
    """
    B, N = logits.shape
    targets = default_targets(B, N, logits.device) if targets is None else targets
    p = contrastive_probs(logits, false_negative_mask, targets)
    neg = torch.ones_like(p, dtype=torch.bool)
    neg[torch.arange(B, device=p.device), targets] = False
    total = p[neg].sum()
    return float(p[neg & same_meaning.to(p.device)].sum() / total) if float(total) > 0 else 0.0


def hard_negative_share(logits_row: torch.Tensor, positive: int, k: int = 3) -> float:
    """For one query's row of logits [N]: the share of its repulsive gradient (sum of p_j over
    negatives) that lands on its k most similar negatives."""
    p = logits_row.detach().float().softmax(-1)
    neg = torch.ones_like(p, dtype=torch.bool)
    neg[positive] = False
    pn = p[neg]
    return float(pn.topk(min(k, len(pn))).values.sum() / pn.sum())


# ----------------------------------------------------------------------------- retrieval metrics

@torch.no_grad()
def class_retrieval_accuracy(q: torch.Tensor, labels_q: torch.Tensor, gallery: torch.Tensor, labels_gallery: torch.Tensor,
                             per_class: bool = False):
    """Top-1 retrieval judged by meaning: query i is right when its most similar gallery item has
    its class. Returns the accuracy (float), or {class: accuracy} with per_class=True."""
    s = F.normalize(q.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    hit = torch.as_tensor(labels_gallery, device=s.device)[s.argmax(-1)].eq(torch.as_tensor(labels_q, device=s.device))
    if not per_class:
        return float(hit.float().mean())
    labels_q = torch.as_tensor(labels_q, device=s.device)
    return {int(c): float(hit[labels_q == c].float().mean()) for c in labels_q.unique().tolist()}


@torch.no_grad()
def mean_cosine(x: torch.Tensor, groups: torch.Tensor, same: bool = True) -> float:
    """Mean cosine similarity between distinct rows of x [N,D] in the same group (same=True) or in
    different groups (same=False); groups [N]."""
    x = F.normalize(x.float(), dim=-1)
    s = x @ x.T
    g = torch.as_tensor(groups, device=s.device)
    pick = g[:, None].eq(g[None, :]) if same else g[:, None].ne(g[None, :])
    pick &= ~torch.eye(len(x), dtype=torch.bool, device=s.device)
    if not pick.any():
        raise ContractError("no pair of rows to compare; fix: at least two items per group")
    return float(s[pick].mean())


# ----------------------------------------------------------------------------- training a dual encoder

CONTRASTIVE_VARIANTS = ("plain", "masked", "supcon")


def pair_batches(images: torch.Tensor, captions: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int,
                 generator: torch.Generator | None = None, classes_per_batch: int | None = None) -> list[tuple]:
    """`steps` random batches of (images [B,...], captions [B,L], labels [B]) drawn without
    replacement within a batch. classes_per_batch=c draws each batch from c random classes only,
    which raises the number of same-class pairs (false negatives) per batch."""
    labels = torch.as_tensor(labels)
    if not len(images) == len(captions) == len(labels):
        raise ContractError(f"{len(images)} images, {len(captions)} captions and {len(labels)} labels: one per pair")
    classes = labels.unique()
    out = []
    for _ in range(steps):
        if classes_per_batch is None:
            pool = torch.arange(len(labels))
        else:
            if not 1 <= classes_per_batch <= len(classes):
                raise ContractError(f"classes_per_batch must lie in [1, {len(classes)}], got {classes_per_batch}")
            chosen = classes[torch.randperm(len(classes), generator=generator)[:classes_per_batch]]
            pool = torch.isin(labels, chosen).nonzero().flatten()
        if len(pool) < batch_size:
            raise ContractError(f"only {len(pool)} pairs to draw a batch of {batch_size} from")
        idx = pool[torch.randperm(len(pool), generator=generator)[:batch_size]]
        out.append((images[idx], captions[idx], labels[idx]))
    return out


def contrastive_objective(variant: str, temperature: float, symmetric: bool = True) -> Callable:
    """loss_fn(model, (images, captions, labels)) for labkit.train.fit:
    plain  = info_nce (same-class pairs are negatives);
    masked = info_nce with false_negative_mask = same_class_mask(labels);
    supcon = supcon_loss (same-class keys are positives)."""
    if variant not in CONTRASTIVE_VARIANTS:
        raise ContractError(f"unknown variant {variant!r}; fix: one of {CONTRASTIVE_VARIANTS}")
    _check_temperature(temperature)

    def loss_fn(model, batch):
        images, captions, labels = batch
        zi, zt = model(images, captions)
        if variant == "plain":
            return info_nce(zi, zt, temperature, symmetric=symmetric)
        if variant == "masked":
            return info_nce(zi, zt, temperature, symmetric=symmetric, false_negative_mask=same_class_mask(labels))
        return supcon_loss(zi, zt, labels, temperature, symmetric=symmetric)
    return loss_fn


@torch.no_grad()
def evaluate_dual_encoder(model, images: torch.Tensor, labels: torch.Tensor, gallery_ids: torch.Tensor,
                          gallery_labels: torch.Tensor) -> dict:
    """Meaning-level metrics of a dual encoder on held-out images and a caption gallery.

    acc: image -> caption top-1 retrieval judged by class; acc_by_class: the same per digit;
    paraphrase_sim / other_caption_sim: mean cosine between gallery captions of the same / of
    different classes; image_same_sim / image_diff_sim: the same for the images.
    """
    dev = next(model.parameters()).device
    zi = model.encode_image(images.to(dev))
    zg = model.encode_text(gallery_ids.to(dev))
    labels, gallery_labels = labels.to(dev), gallery_labels.to(dev)
    return {"acc": class_retrieval_accuracy(zi, labels, zg, gallery_labels),
            "acc_by_class": class_retrieval_accuracy(zi, labels, zg, gallery_labels, per_class=True),
            "paraphrase_sim": mean_cosine(zg, gallery_labels, same=True),
            "other_caption_sim": mean_cosine(zg, gallery_labels, same=False),
            "image_same_sim": mean_cosine(zi, labels, same=True),
            "image_diff_sim": mean_cosine(zi, labels, same=False)}


@torch.no_grad()
def batch_repulsive_share(model, batches: list, temperature: float, masked: bool = False) -> float:
    """Mean over batches of repulsive_share (image -> caption rows): the share of plain InfoNCE's
    push that lands on same-class pairs; masked=True applies the false-negative mask (share 0)."""
    dev = next(model.parameters()).device
    shares = []
    for images, captions, labels in batches:
        zi, zt = model(images.to(dev), captions.to(dev))
        same = same_class_mask(labels.to(dev))
        shares.append(repulsive_share(similarity_logits(zi, zt, temperature), same,
                                      false_negative_mask=same if masked else None))
    return sum(shares) / len(shares)


# ----------------------------------------------------------------------------- negatives across ranks

def gathered_targets(rank: int, local_batch: int, device=None) -> torch.Tensor:
    """Targets of the local queries in [B_local, R*B_local] logits: rank * B_local + arange(B_local)."""
    return rank * local_batch + torch.arange(local_batch, device=device)


def gathered_info_nce(q_local: torch.Tensor, k_local: torch.Tensor, temperature: float, gather: str = "with_grad",
                      symmetric: bool = False, normalize: bool = True) -> torch.Tensor:
    """InfoNCE of this rank's B_local queries against the keys of every rank (inside a process group).

    logits [B_local, R*B_local], targets rank*B_local + arange(B_local). gather:
      with_grad: keys gathered differentiably: the loss's gradient reaches every rank's key tower;
      no_grad:   other ranks' keys are constants (only this rank's own rows keep their gradient);
      detached:  every gathered key is a constant, this rank's own included (keys get no gradient);
      local:     no gather: [B_local, B_local] logits, in-batch negatives of this rank only.
    symmetric=True also gathers the queries and adds the k->q direction.
    """


    if gather not in GATHER_DESIGNS:
        raise ContractError(f"unknown gather design {gather!r}; fix: one of {GATHER_DESIGNS}")
    if gather == "local":
        return info_nce(q_local, k_local, temperature, symmetric=symmetric, normalize=normalize)
    if not dist.is_initialized():
        raise ContractError("gathered_info_nce runs inside a process group; fix: call it from a rank function started "
                            "by labkit.dist.run_ranks")

    def collect(x):
        if gather == "with_grad":
            return all_gather_with_grad(x)
        return all_gather_no_grad(x, keep_local_grad=gather == "no_grad")   # "detached": own slot constant too

    B = q_local.shape[0]
    targets = gathered_targets(dist.get_rank(), B, q_local.device)
    loss = info_nce(q_local, collect(k_local), temperature, targets=targets, normalize=normalize)
    if symmetric:
        loss = 0.5 * (loss + info_nce(k_local, collect(q_local), temperature, targets=targets, normalize=normalize))
    return loss


def dual_encoder_grads(model, images: torch.Tensor, captions: torch.Tensor, temperature: float, symmetric: bool = True):
    """Single-process reference: full-batch info_nce on the whole batch -> (loss, {param: grad})."""
    model.zero_grad(set_to_none=True)
    zi, zt = model(images, captions)
    loss = info_nce(zi, zt, temperature, symmetric=symmetric)
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def gathered_clip_loss(zi_local: torch.Tensor, zt_local: torch.Tensor, temperature: float,
                       world_scale: bool = True, normalize: bool = True) -> torch.Tensor:
    """OpenCLIP's recipe without gradient through the gather (gather_features with
    gather_with_grad=False, local_loss=False), inside a process group.

    Every rank all-gathers both towers' features under no_grad, puts its own grad-carrying
    features back into its slot, and computes the symmetric InfoNCE over all N = R*B_local pairs
    (logits [N, N]). The loss depends on this rank's features only through its own slot, so this
    rank's feature gradient is exactly the full-batch one; summed over ranks the parameter gradients
    give the single-process full-batch gradient. DDP averages (sum / R), hence world_scale: the loss
    is multiplied by R so that the average is that full-batch gradient.
    """


    if not (dist.is_available() and dist.is_initialized()):
        raise ContractError("gathered_clip_loss runs inside a process group; fix: call it from a rank function started "
                            "by labkit.dist.run_ranks")
    zi_all, zt_all = all_gather_no_grad(zi_local), all_gather_no_grad(zt_local)     # own slot keeps its grad
    loss = info_nce(zi_all, zt_all, temperature, symmetric=True, normalize=normalize)
    return loss * dist.get_world_size() if world_scale else loss


def flat_grad(model) -> torch.Tensor:
    """Every parameter's .grad, flattened and concatenated in parameters() order (zeros where None)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten() for p in model.parameters()])


def gathered_negatives_rank(rank: int, world_size: int, model, images: torch.Tensor, captions: torch.Tensor,
                            temperature: float, symmetric: bool = True) -> dict:
    """Rank function for labkit.dist.run_ranks: each recipe of GATHER_RECIPES on this rank's slice.

    The rank takes rows [rank*B, (rank+1)*B) of the batch, computes the recipe's loss, backward, and
    averages the parameter gradients over ranks as DistributedDataParallel does (all-reduce sum / R).
    Returns {"full_loss": the single-process loss on the whole batch, recipe: {"loss_mean": the
    loss averaged over ranks, "grad": the flat averaged gradient (flat_grad order)}}; the averaged
    gradient is the same on every rank. symmetric applies to the recipes with local queries.
    """

    full_loss, _ = dual_encoder_grads(model, images, captions, temperature, symmetric)
    B = images.shape[0] // world_size
    rows = slice(rank * B, (rank + 1) * B)
    out: dict = {"full_loss": full_loss}
    for recipe in GATHER_RECIPES:
        model.zero_grad(set_to_none=True)
        zi, zt = model(images[rows], captions[rows])
        if recipe.startswith("openclip"):
            loss = gathered_clip_loss(zi, zt, temperature, world_scale=recipe == "openclip")
        else:
            loss = gathered_info_nce(zi, zt, temperature, gather=recipe, symmetric=symmetric)
        loss.backward()
        out[recipe] = {"loss_mean": float(all_reduce_sum(loss.detach())) / world_size,
                       "grad": all_reduce_sum(flat_grad(model)) / world_size}
    return out


def single_process_grad(model, images: torch.Tensor, captions: torch.Tensor, temperature: float,
                        keys: str = "all", world_size: int = 1) -> torch.Tensor:
    """The flat parameter gradient of the symmetric full-batch InfoNCE on one process, with a
    choice of which key terms carry gradient (the query terms always do):

    keys="all": every term, the reference; "own_rank": query i's keys carry gradient only when they
    sit on query i's rank (rank = row // (N / world_size)); "none": keys are constants.
    """
    if keys not in ("all", "own_rank", "none"):
        raise ContractError(f"keys must be 'all', 'own_rank' or 'none', got {keys!r}")
    N = images.shape[0]
    if N % world_size:
        raise ContractError(f"{N} pairs do not split evenly over {world_size} ranks")
    model.zero_grad(set_to_none=True)
    zi, zt = model(images, captions)
    if keys == "all":
        loss = info_nce(zi, zt, temperature, symmetric=True)
    elif keys == "none":
        loss = 0.5 * (info_nce(zi, zt.detach(), temperature) + info_nce(zt, zi.detach(), temperature))
    else:
        B = N // world_size
        loss = 0.0
        for r in range(world_size):
            own = torch.zeros(N, 1, dtype=torch.bool, device=zi.device)
            own[r * B:(r + 1) * B] = True
            rows, t = slice(r * B, (r + 1) * B), gathered_targets(r, B, zi.device)
            ki, kt = torch.where(own, zi, zi.detach()), torch.where(own, zt, zt.detach())
            loss = loss + 0.5 * (info_nce(zi[rows], kt, temperature, targets=t)
                                 + info_nce(zt[rows], ki, temperature, targets=t)) / world_size
    loss.backward()
    return flat_grad(model)


def gradient_agreement(g: torch.Tensor, reference: torch.Tensor) -> dict:
    """How a flat gradient compares with a reference: "rel" = ||g - ref|| / ||ref||, "cos" = cosine,
    "norm_ratio" = ||g|| / ||ref|| (floats)."""
    g, ref = g.double().flatten(), reference.double().flatten()
    n = float(ref.norm())
    if n == 0:
        raise ContractError("the reference gradient is zero: nothing to compare with")
    return {"rel": float((g - ref).norm()) / n, "cos": float(F.cosine_similarity(g, ref, dim=0)),
            "norm_ratio": float(g.norm()) / n}


def key_push_balance(logits: torch.Tensor, world_size: int) -> dict:
    """The logit gradient's weight on keys, G = p - onehot (rows of a [N,N] similarity matrix whose
    rows and columns are split over world_size ranks in order), summed and divided by N:

    "full": every entry, = 0 (each row of p - onehot sums to 0: pushes balance the pull);
    "local": each rank's own block with its own softmax (no gather), = 0 likewise;
    "own_rank": the full softmax's entries whose key sits on the query's rank (what reaches the keys
    under the no_grad gather) = -(mean over queries of the mass on other ranks' keys): pushes lost.
    """
    N = logits.shape[0]
    if logits.shape != (N, N) or N % world_size:
        raise ContractError(f"need square [N,N] logits with N divisible by world_size, got {tuple(logits.shape)}")
    B = N // world_size
    eye = torch.eye(N, dtype=torch.float64, device=logits.device)
    G = logits.detach().double().softmax(-1) - eye
    rank = torch.arange(N, device=logits.device) // B
    same = rank[:, None].eq(rank[None, :])
    local = sum(float((logits.detach().double()[r * B:(r + 1) * B, r * B:(r + 1) * B].softmax(-1) - eye[:B, :B]).sum())
                for r in range(world_size))
    return {"full": float(G.sum()) / N, "local": local / N, "own_rank": float(G[same].sum()) / N}


def compare_grads(a: dict, b: dict) -> dict:
    """Max absolute and relative difference between two {name: grad} dicts (relative to b's max)."""
    diff = max(float((a[n] - b[n]).abs().max()) for n in b)
    scale = max(float(b[n].abs().max()) for n in b)
    return {"max_abs": diff, "max_rel": diff / scale if scale > 0 else diff}


# ----------------------------------------------------------------------------- hard-negative mining (notebook 09)


class DuplicateCatalogue:
    """A retrieval world with a coarse and a fine level of meaning, and KNOWN duplicates.

    `categories` x `products_per_category` products. A product's vector is [its category's
    prototype (N(0, s_coarse^2) per dimension, shared by the category), its own offset
    (N(0, s_fine^2))]: the category is easy to see, the product within it is not. Each product is
    listed `listings_per_product` times (listing = product vector + N(0, s_listing^2) noise, plus
    `nuisance_dim` dimensions of N(0, s_nuisance^2) noise that mean nothing): the catalogue's
    duplicates. A query is a fresh view of a product (N(0, s_query^2) noise, its own nuisance).
    Any listing of the query's product is a right answer, so when a query's positive is one
    listing, the other listings of the same product are false negatives.

    listings [N, dim], listing_product [N], product_category [P].
    """

    def __init__(self, seed: int = 0, categories: int = 32, products_per_category: int = 4, listings_per_product: int = 6,
                 coarse_dim: int = 8, fine_dim: int = 8, nuisance_dim: int = 16, s_coarse: float = 2.0, s_fine: float = 0.4,
                 s_listing: float = 0.2, s_query: float = 0.5, s_nuisance: float = 2.0):
        C, Fp = count(categories, "categories", 2), count(products_per_category, "products_per_category", 2)
        L = count(listings_per_product, "listings_per_product", 1)
        dims = [count(coarse_dim, "coarse_dim"), count(fine_dim, "fine_dim"), count(nuisance_dim, "nuisance_dim", 0)]
        self.s_coarse, self.s_fine = positive(s_coarse, "s_coarse"), positive(s_fine, "s_fine")
        self.s_listing, self.s_query = finite(s_listing, "s_listing", low=0.0), finite(s_query, "s_query", low=0.0)
        self.s_nuisance = finite(s_nuisance, "s_nuisance", low=0.0)
        g = torch.Generator().manual_seed(int(seed))
        category = torch.randn(C, dims[0], generator=g) * self.s_coarse
        offset = torch.randn(C, Fp, dims[1], generator=g) * self.s_fine
        self.products = torch.cat([category[:, None].expand(C, Fp, dims[0]), offset], -1).reshape(C * Fp, -1)
        self.product_category = torch.arange(C * Fp) // Fp
        self.listing_product = torch.arange(C * Fp).repeat_interleave(L)
        self.nuisance_dim, self.listings_per_product = dims[2], L
        self.listings = self._view(self.listing_product, self.s_listing, g)

    @property
    def dim(self) -> int:
        return self.listings.shape[1]

    @property
    def n_products(self) -> int:
        return len(self.products)

    def _view(self, products: torch.Tensor, noise: float, generator) -> torch.Tensor:
        base = self.products[products] + noise * torch.randn(len(products), self.products.shape[1], generator=generator)
        return torch.cat([base, self.s_nuisance * torch.randn(len(products), self.nuisance_dim, generator=generator)], -1)

    def queries(self, products, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh query views of the given products ([n] ids) -> [n, dim]."""
        products = torch.as_tensor(products)
        if products.dim() != 1 or (len(products) and (int(products.min()) < 0 or int(products.max()) >= self.n_products)):
            raise ContractError(f"products must be [n] ids in [0, {self.n_products}), got {tuple(products.shape)}")
        return self._view(products, self.s_query, generator)

    def duplicates(self, positive: torch.Tensor) -> torch.Tensor:
        """[B, N] bool: True where listing j shows the same product as listing positive[i] (itself included)."""
        return self.listing_product[None, :].eq(self.listing_product[torch.as_tensor(positive)][:, None])


def mine_negatives(sim: torch.Tensor, positive: torch.Tensor, n_neg: int, k: int | None = None,
                   exclude: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick n_neg negatives per query: [B, n_neg] key indices.

    sim [B,N]: similarities of each query to every key; positive [B]: its matched key (never a
    negative). k=None: uniformly at random among the other keys ("random negatives"); k: at random
    among the k most similar other keys (hard-negative mining; smaller k = harder). exclude [B,N]
    bool: keys that may never be negatives (e.g. known duplicates of the positive).
    """
    if sim.dim() != 2:
        raise ContractError(f"sim must be [B,N] similarities, got {tuple(sim.shape)}")
    B, N = sim.shape
    positive = torch.as_tensor(positive, device=sim.device)
    if positive.shape != (B,) or int(positive.min()) < 0 or int(positive.max()) >= N:
        raise ContractError(f"positive must be [B]={B} key indices in [0, {N})")
    n_neg = count(n_neg, "n_neg")
    score = torch.rand(B, N, generator=generator).to(sim.device) if k is None else sim.detach().float().clone()
    banned = torch.zeros(B, N, dtype=torch.bool, device=sim.device)
    banned[torch.arange(B, device=sim.device), positive] = True
    if exclude is not None:
        if exclude.shape != (B, N) or exclude.dtype != torch.bool:
            raise ContractError(f"exclude must be a [B,N]={B, N} bool mask, got {exclude.dtype} {tuple(exclude.shape)}")
        banned |= exclude.to(sim.device)
    pool = N - int(banned.sum(1).max())
    depth = pool if k is None else count(k, "k")
    if not n_neg <= depth <= pool:
        raise ContractError(f"need n_neg <= k <= the keys left per query: n_neg={n_neg}, k={depth}, keys left={pool}; "
                            "fix: a larger k or fewer negatives")
    top = score.masked_fill(banned, float("-inf")).topk(depth, dim=1).indices
    pick = torch.rand(B, depth, generator=generator).argsort(1)[:, :n_neg].to(sim.device)
    return top.gather(1, pick)


def mined_info_nce(zq: torch.Tensor, zpos: torch.Tensor, zneg: torch.Tensor, temperature: float,
                   false_negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over in-batch keys plus mined negatives (DPR style).

    zq [B,D] queries, zpos [B,D] their positive keys, zneg [B,K,D] each query's mined negatives.
    Query i classifies over [the B in-batch keys | its own K negatives], target i:
    logits [B, B+K] = [normalize(zq) @ normalize(zpos).T, <zq_i, zneg_ik>] / tau.
    false_negative_mask [B,B] bool removes in-batch keys that share query i's meaning.
    """
    _check_pair(zq, zpos)
    t = _check_temperature(temperature)
    if zneg.dim() != 3 or zneg.shape[0] != zq.shape[0] or zneg.shape[2] != zq.shape[1]:
        raise ContractError(f"zneg must be [B,K,D] = [{zq.shape[0]}, K, {zq.shape[1]}], got {tuple(zneg.shape)}")
    q, p, n = F.normalize(zq, dim=-1), F.normalize(zpos, dim=-1), F.normalize(zneg, dim=-1)
    in_batch = _mask_logits(q @ p.T / t, torch.arange(len(q), device=q.device), false_negative_mask)
    mined = (q[:, None] * n).sum(-1) / t
    return F.cross_entropy(torch.cat([in_batch, mined], 1), torch.arange(len(q), device=q.device))


def catalogue_encoder(dim: int, seed: int, hidden: int = 64, out: int = 16) -> torch.nn.Module:
    """One MLP tower for queries and listings alike: [n, dim] -> [n, out] (seeded initialisation)."""
    torch.manual_seed(int(seed))
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, out))


def train_with_mined_negatives(catalogue: DuplicateCatalogue, seed: int, k: int | None = None, dedup: bool = False,
                               steps: int = 150, batch_size: int = 32, n_neg: int = 4, temperature: float = 0.1,
                               lr: float = 3e-3) -> tuple[torch.nn.Module, dict]:
    """Train catalogue_encoder with in-batch negatives plus n_neg negatives per query mined from the
    whole catalogue under the current model: random (k=None) or among its k most similar listings.
    dedup=True drops the known duplicates of the positive (from the mining pool and the in-batch
    keys). Each step: batch_size products' listings as positives, fresh query views as queries.
    Returns (model, {"fn_share": share of mined negatives that are duplicates of the positive,
    over the last quarter of training}). Same seed -> same init, same positives and views."""
    g = torch.Generator().manual_seed(int(seed) + 7)
    N = len(catalogue.listings)
    positives = [torch.randint(N, (batch_size,), generator=g) for _ in range(steps)]
    batches = [(catalogue.queries(catalogue.listing_product[p], g), p) for p in positives]
    mine_gen = torch.Generator().manual_seed(int(seed) + 11)
    fn: list[float] = []

    def loss_fn(model, batch):
        queries, pos = batch
        zq, zl = model(queries), model(catalogue.listings.to(queries.device))
        dup = catalogue.duplicates(pos.cpu()).to(queries.device)
        with torch.no_grad():
            neg = mine_negatives(F.normalize(zq, dim=-1) @ F.normalize(zl, dim=-1).T, pos, n_neg, k,
                                 exclude=dup if dedup else None, generator=mine_gen)
            fn.append(float(dup.gather(1, neg).float().mean()))
        in_batch_fn = dup[:, pos] & ~torch.eye(len(pos), dtype=torch.bool, device=dup.device) if dedup else None
        return mined_info_nce(zq, zl[pos], zl[neg], temperature, false_negative_mask=in_batch_fn)

    model = catalogue_encoder(catalogue.dim, seed)
    fit(model, batches, loss_fn, steps=steps, lr=lr, progress=False, desc="mined negatives")
    tail = fn[-max(1, steps // 4):]
    return model, {"fn_share": sum(tail) / len(tail)}


@torch.no_grad()
def catalogue_retrieval(model: torch.nn.Module, catalogue: DuplicateCatalogue, n: int = 1000, seed: int = 99) -> dict:
    """Top-1 retrieval of n fresh queries against the whole catalogue (cosine): "fine" = the
    retrieved listing shows the query's product (any duplicate counts), "coarse" = its category."""
    g = torch.Generator().manual_seed(int(seed))
    products = torch.randint(catalogue.n_products, (n,), generator=g)
    dev = next(model.parameters()).device
    q = F.normalize(model(catalogue.queries(products, g).to(dev)), dim=-1)
    top = (q @ F.normalize(model(catalogue.listings.to(dev)), dim=-1).T).argmax(-1).cpu()
    got = catalogue.listing_product[top]
    return {"fine": float(got.eq(products).double().mean()),
            "coarse": float(catalogue.product_category[got].eq(catalogue.product_category[products]).double().mean())}

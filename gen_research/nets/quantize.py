"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning"): nearest-code lookup with
the straight-through estimator, the codebook and commitment losses, optional EMA codebook updates, and dead-code
restart.

Hand-written rather than lucidrains' vector-quantize-pytorch (PyPI): the library restarts codes whose EMA cluster size
falls under a threshold (``threshold_ema_dead_code``) and only in its EMA mode, while we restart a code after a fixed
number of training steps without use, in either mode, tracked by a persistent per-code counter so a resumed run restarts
exactly the same codes; it also adds kmeans init, several codebooks and rotation tricks we do not need. The whole
quantiser is ~150 lines, and each rule below is tested against a hand computation (tests/models/vqvae/).

Distributed training (torch.distributed initialised): the per-step code counts are all-reduced before they update the
"steps unused" counters (every rank restarts the same codes), the EMA statistics' batch counts and sums are
all-reduced (every rank's codebook stays identical), and the replacement vectors of a restart are rank 0's, broadcast.
Not synced: the losses (each rank's, averaged by DDP through the gradients, as for any loss) and the returned codes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gen_research.errors import GenResearchError


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def code_histogram(codes: Tensor, codebook_size: int) -> Tensor:
    """How often each code occurs in ``codes`` (any shape): int64 ``[codebook_size]``."""
    return torch.bincount(codes.reshape(-1).long(), minlength=codebook_size)


def codebook_usage(histogram: Tensor) -> float:
    """The fraction of codes used at least once, from a code histogram (:func:`code_histogram`)."""
    return float((histogram > 0).float().mean())


def perplexity(histogram: Tensor) -> float:
    """exp of the entropy (nats) of the code distribution a histogram gives: K when K codes are used equally often,
    1 when one code is used; 0 for an empty histogram."""
    total = histogram.sum()
    if total == 0:
        return 0.0
    p = histogram.double() / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy.exp())


class VectorQuantizer(nn.Module):
    """Maps encoder outputs ``z [B, dim, h, w]`` to their nearest codebook vectors.

    - ``beta`` weighs the commitment term: ``loss = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2`` (the paper's eq. 3).
    - ``ema=True``: the codebook is not learned by gradient but moves to the EMA (``decay``) of the cluster sizes and
      sums of the encoder outputs assigned to each code, with Laplace smoothing ``eps`` (the paper's appendix A.1,
      Sonnet's VectorQuantizerEMA); only the commitment term remains in the loss. The statistics start as lucidrains'
      EuclideanCodebook's do (size 1, sum = the code itself), so an unused code stays where it is instead of being
      divided by ~eps.
    - ``restart_unused_after`` N > 0: a code not chosen in any of the last N training steps is replaced by an encoder
      output of the current batch drawn with the global torch RNG (checkpointed by the framework: a resumed run
      restarts the same codes), and its EMA statistics restart from it. 0 turns this off.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 eps: float = 1e-5, restart_unused_after: int = 0) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise GenResearchError(f"VectorQuantizer: codebook_size={codebook_size} and dim={dim} must be positive")
        if not 0.0 < decay < 1.0 or eps <= 0 or beta < 0 or restart_unused_after < 0:
            raise GenResearchError(f"VectorQuantizer: need 0 < decay={decay} < 1, eps={eps} > 0, beta={beta} >= 0, restart_unused_after={restart_unused_after} >= 0")
        self.codebook_size, self.dim = codebook_size, dim
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.restart_unused_after = restart_unused_after
        # taming-transformers' init (uniform in +-1/K): codes start near the origin, where a fresh encoder's outputs are.
        initial = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        if ema:
            self.register_buffer("codebook", initial)
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embedding_sum", initial.clone())
        else:
            self.codebook = nn.Parameter(initial)
        # Persistent (in the state_dict): a resumed run counts on from where it stopped.
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    # ---- lookup -----------------------------------------------------------------------------------------
    def nearest_codes(self, flat: Tensor) -> Tensor:
        """Index of the nearest code (L2) of each row of ``flat [N, dim]``."""
        with torch.autocast(flat.device.type, enabled=False):  # bf16 distances would pick wrong codes
            flat = flat.float()
            codebook = self.codebook.float()
            distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None]
            return distances.argmin(1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Code vectors of int64 ``codes [B, h, w]`` as ``[B, dim, h, w]``."""
        return rearrange(F.embedding(codes.long(), self.codebook), "b h w d -> b d h w")

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z_q with straight-through gradient to z, the VQ loss, int64 codes ``[B, h, w]``) of ``z [B, dim, h, w]``."""
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects [B, {self.dim}, h, w], got {tuple(z.shape)}")
        b, _, h, w = z.shape
        z = z.float()
        flat = rearrange(z, "b d h w -> (b h w) d")
        codes = self.nearest_codes(flat.detach())
        quantized = self.lookup(codes.view(b, h, w))
        commitment = F.mse_loss(z, quantized.detach())
        if self.ema:
            loss = self.beta * commitment
        else:
            # beta on the commitment term, as the paper's eq. 3. taming-transformers' VectorQuantizer2 with its default
            # legacy=True computes mean((sg[z] - e)^2) * beta + mean((z - sg[e])^2), i.e. beta on the codebook term.
            loss = F.mse_loss(quantized, z.detach()) + self.beta * commitment
        if self.training:
            with torch.no_grad():
                counts = code_histogram(codes, self.codebook_size).to(flat.dtype)
                if self.ema:
                    self._ema_update(flat.detach(), codes, counts)
                if self.restart_unused_after > 0:
                    self._restart_dead_codes(flat.detach(), counts)
        # Straight-through estimator: the decoder's gradient w.r.t. z_q is copied to z.
        z_q = z + (quantized - z).detach()
        return z_q, loss, codes.view(b, h, w)

    # ---- training-time codebook updates -----------------------------------------------------------------
    def _ema_update(self, flat: Tensor, codes: Tensor, counts: Tensor) -> None:
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, codes, flat)
        if _distributed():
            dist.all_reduce(counts)  # in place: the restart below reads the global counts too
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total  # Laplace smoothing
        self.codebook.copy_(self.embedding_sum / smoothed[:, None])

    def _restart_dead_codes(self, flat: Tensor, counts: Tensor) -> None:
        if _distributed() and not self.ema:  # with EMA the counts were reduced already
            dist.all_reduce(counts)
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.steps_unused >= self.restart_unused_after).nonzero().flatten()
        if len(dead) == 0:
            return
        # Distinct batch vectors when there are enough (two codes restarted at one vector would split nothing).
        if len(dead) <= len(flat):
            picks = torch.randperm(len(flat), device=flat.device)[: len(dead)]
        else:
            picks = torch.randint(len(flat), (len(dead),), device=flat.device)
        replacements = flat[picks].to(self.codebook.dtype)
        if _distributed():
            dist.broadcast(replacements, src=0)
        self.codebook.data[dead] = replacements
        self.steps_unused[dead] = 0
        if self.ema:
            self.cluster_size[dead] = 1.0
            self.embedding_sum[dead] = replacements


__all__ = ["VectorQuantizer", "code_histogram", "codebook_usage", "perplexity"]

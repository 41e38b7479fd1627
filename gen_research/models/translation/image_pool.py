"""CycleGAN's history of generated images, checkpointed.

Written by hand (no library has one): the reference, junyanz/pytorch-CycleGAN-and-pix2pix util/image_pool.py
``ImagePool``, keeps its images in a Python list, so a resumed run starts with an empty pool and a different
stream of discriminator inputs. Here the pool lives in persistent buffers, which the module's state_dict, and so
the Lightning checkpoint, carries.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gen_research.errors import GenResearchError


class ImagePool(nn.Module):
    """The reference's ``ImagePool.query``: the discriminator sees a batch of the same size as the generator's,
    where, once ``pool_size`` fakes are stored, each new fake is swapped with probability 0.5 for a random stored
    one (which it replaces); until then every fake is stored and returned. ``pool_size`` 0 passes fakes through.

    Randomness: every query with ``pool_size`` > 0 draws, in this order, B uniforms then B slot indices in
    [0, pool_size) from ``generator`` (else torch's global CPU RNG, which the framework checkpoints), whether or not
    the pool is full yet, so the same RNG state and pool state give the same batch. Returned images are detached,
    as the reference stores and returns ``.data``.
    """

    images: Tensor
    count: Tensor

    def __init__(self, pool_size: int = 50, image_shape: tuple[int, int, int] = (3, 256, 256)) -> None:
        super().__init__()
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
            raise GenResearchError(f"ImagePool: pool_size={pool_size!r} must be an integer >= 0 (0 turns the pool off; "
                                   "CycleGAN uses 50)")
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(isinstance(side, int) and side >= 1 for side in shape):
            raise GenResearchError(f"ImagePool: image_shape={image_shape!r} must be three positive integers (C, H, W)")
        self.pool_size, self.image_shape = pool_size, shape
        self.register_buffer("images", torch.zeros(pool_size, *shape, dtype=torch.float32), persistent=True)
        self.register_buffer("count", torch.zeros((), dtype=torch.int64), persistent=True)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, image_shape={self.image_shape}"

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.query(images, generator)

    @torch.no_grad()
    def query(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A batch like ``images`` ([B, C, H, W] with (C, H, W) == image_shape), detached, mixing in stored fakes."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"ImagePool holds images of shape {self.image_shape}, got a batch of shape "
                             f"{tuple(images.shape)}; build it with image_shape=(C, H, W) of the generated images")
        images = images.detach()
        if self.pool_size == 0:
            return images
        batch = images.shape[0]
        device = generator.device if generator is not None else torch.device("cpu")
        coins = torch.rand(batch, generator=generator, device=device).tolist()
        slots = torch.randint(self.pool_size, (batch,), generator=generator, device=device).tolist()
        returned = images.clone()
        count = int(self.count)
        for index in range(batch):
            image = images[index].to(self.images)
            if count < self.pool_size:  # filling: store it and hand it back
                self.images[count] = image
                count += 1
            elif coins[index] > 0.5:  # the reference's `p > 0.5`: hand back a stored fake, store this one
                returned[index] = self.images[slots[index]].to(returned)
                self.images[slots[index]] = image
        self.count.fill_(count)
        return returned

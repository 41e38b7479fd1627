"""Training several networks with their own optimizers (a GAN's generator and discriminator): one training
iteration is one batch, whatever the number of optimizer steps in it.

Under Lightning's manual optimization every ``optimizer.step()`` adds one to ``trainer.global_step``
(Lightning-AI/pytorch-lightning#17958, open; the fix #19589 is unmerged), so a GAN with one discriminator and one
generator step per batch would stop at ``max_steps / 2`` batches, checkpoint every ``every_n_train_steps / 2``
batches, update its EMA twice as often as configured and size its cosine schedule for half the run.
:class:`MultiNetworkTraining` makes the unit explicit: its optimizer steps are not counted, and each training
iteration counts once when it ends. So ``trainer.global_step`` == batches trained, and ``max_steps``, the cosine
length (``estimated_stepping_batches``), EMA cadence, ``checkpoint.every_n_train_steps``, ``val_check_interval``,
``log_every_n_steps`` and the preemption step boundary all count batches, as under automatic optimization.
docs/multi-network-training.md describes the unit for users.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.training.optimizers import OptimizerSpec, build_adamw


class MultiNetworkTraining:
    """Mixin (list it before LightningModule) for a family whose submodules train with optimizers of their own.

    The family sets ``self.optimizer_specs`` (network name -> :class:`OptimizerSpec`, e.g. from
    :func:`gen_research.training.optimizers.optimizer_specs`, in the order their optimizers are built) and implements
    :meth:`training_iteration`, calling :meth:`step_network` once per optimizer step. The mixin owns
    ``training_step``: it builds nothing per network by hand, steps every network's LR schedule once per iteration
    (whether or not that network stepped), clips each network's gradients by its own spec and counts the iteration
    as one training step.
    """

    optimizer_specs: dict[str, OptimizerSpec]

    @property
    def automatic_optimization(self) -> bool:
        return False

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        if value:
            raise GenResearchError(f"{type(self).__name__} trains several networks with manual optimization; it cannot be switched to automatic")

    # ---- what a family implements -----------------------------------------------------------------
    def training_iteration(self, batch: Any, batch_idx: int) -> dict[str, Tensor] | None:
        """One training iteration on ``batch``: every optimizer step it takes, through :meth:`step_network`.
        Returns the scalars to log (already logged or not, as the family prefers), or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_iteration(batch, batch_idx)")

    # ---- what the mixin provides -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Under DDP, let each network's step leave the others without gradients: a D step does not use G's
        parameters, so DDP's default (``find_unused_parameters=False``) stops at the first step with "parameters that
        were not used in producing the loss". The setup hook runs before the strategy wraps the model."""
        super().setup(stage)  # type: ignore[misc]
        strategy = self.trainer.strategy  # type: ignore[attr-defined]
        ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)  # DDPStrategy's DistributedDataParallel keywords
        if isinstance(ddp_kwargs, dict) and not ddp_kwargs.get("find_unused_parameters", False):
            ddp_kwargs["find_unused_parameters"] = True
            rank_zero_info(f"{type(self).__name__}: DDP with find_unused_parameters=True (each network steps alone)")

    def network(self, name: str) -> nn.Module:
        """The submodule ``name`` (a key of ``optimizer_specs``); an unknown name lists the submodules."""
        module = getattr(self, name, None)
        if not isinstance(module, nn.Module):
            children = ", ".join(child for child, _ in self.named_children()) or "none"  # type: ignore[attr-defined]
            raise GenResearchError(f"{type(self).__name__} has no network {name!r}; its submodules are {children}")
        return module

    def network_optimizer(self, name: str) -> LightningOptimizer:
        optimizers = self.optimizers()  # type: ignore[attr-defined]
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[list(self.optimizer_specs).index(name)]

    def step_network(self, name: str, loss_fn: Callable[[], Tensor]) -> Tensor:
        """One optimizer step of network ``name`` on the loss ``loss_fn()`` computes.

        The other networks' parameters do not require gradients while the loss is computed (Lightning's
        ``toggle_optimizer``), so e.g. the generator's loss does not fill the discriminator's gradients. Gradients
        are zeroed, back-propagated, clipped by the network's ``gradient_clip_val`` and applied. Returns the
        loss, detached."""
        optimizer = self.network_optimizer(name)
        spec = self.optimizer_specs[name]
        self.toggle_optimizer(optimizer)  # type: ignore[attr-defined]
        try:
            loss = loss_fn()
            optimizer.zero_grad()
            self.manual_backward(loss)  # type: ignore[attr-defined]
            if spec.clips:
                self.clip_gradients(optimizer, gradient_clip_val=spec.gradient_clip_val, gradient_clip_algorithm=spec.gradient_clip_algorithm)  # type: ignore[attr-defined]
            optimizer.step()
        finally:
            self.untoggle_optimizer(optimizer)  # type: ignore[attr-defined]
        return loss.detach()

    def configure_optimizers(self) -> list[dict[str, Any]]:
        """One AdamW + warm-up/cosine schedule per network, in ``optimizer_specs`` order (logged as ``lr-<network>``)."""
        configured = []
        for name, spec in self.optimizer_specs.items():
            optimizer, scheduler = build_adamw(self.network(name).parameters(), spec, self)  # type: ignore[arg-type]
            configured.append({"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": f"lr-{name}"}})
        return configured

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor] | None:
        loop = self.trainer.fit_loop.epoch_loop.manual_optimization  # type: ignore[attr-defined]
        self._step_without_counting(loop)
        outputs = self.training_iteration(batch, batch_idx)
        schedulers = self.lr_schedulers()  # type: ignore[attr-defined]
        with warnings.catch_warnings():
            # Every schedule steps once per iteration on purpose, also for a network that did not step (a
            # discriminator before its start step): torch's order warning is expected there, and only that one is silenced.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()
        # The one count of this iteration: global_step (max_steps, checkpoints, EMA, ...) advances by one batch.
        loop.optim_step_progress.increment_ready()
        loop.optim_step_progress.increment_completed()
        return outputs

    def _step_without_counting(self, loop: Any) -> None:
        """Lightning's manual loop hooks each optimizer's step to count it (and profile it) for this batch; keep
        the profiling, drop the count. The hooks are Lightning's private attributes: checked, so that a Lightning
        that renames them fails here in one line rather than counting every step."""
        profiler = self.trainer.profiler  # type: ignore[attr-defined]
        progress = getattr(loop, "optim_step_progress", None)
        optimizers = self.trainer.strategy._lightning_optimizers  # type: ignore[attr-defined]
        if progress is None or not all(hasattr(o, "_on_before_step") and hasattr(o, "_on_after_step") for o in optimizers):
            raise RuntimeError("this Lightning version counts manual optimizer steps differently; gen_research/training/multi_network.py needs updating")
        for optimizer in optimizers:
            optimizer._on_before_step = lambda: profiler.start("optimizer_step")
            optimizer._on_after_step = lambda: profiler.stop("optimizer_step")

    def configure_callbacks(self) -> Any:
        """Runs when a Trainer starts, before Lightning validates its settings: Trainer-wide clipping or gradient
        accumulation cannot apply to several optimizers; say which setting to use instead, in one line."""
        trainer = self.trainer  # type: ignore[attr-defined]
        networks = ", ".join(self.optimizer_specs)
        if trainer.gradient_clip_val:
            raise GenResearchError(
                f"trainer.gradient_clip_val={trainer.gradient_clip_val} does not apply to {type(self).__name__}, whose networks "
                f"({networks}) have optimizers of their own: remove it and set model.init_args.optimizers.<network>.gradient_clip_val"
            )
        if trainer.accumulate_grad_batches != 1:
            raise GenResearchError(
                f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} does not apply to {type(self).__name__} "
                f"(manual optimization of {networks}): remove it and raise data.init_args.batch_size instead"
            )
        if type(self).training_step is not MultiNetworkTraining.training_step:
            raise TypeError(f"{type(self).__name__} overrides training_step; implement training_iteration instead (it is counted as one step)")
        return super().configure_callbacks()  # type: ignore[misc]


def grad_norm(module: nn.Module) -> float:
    """The total L2 norm of a module's gradients (0 when it has none): for tests and logging."""
    grads = [p.grad.detach().float() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


__all__ = ["MultiNetworkTraining", "grad_norm"]

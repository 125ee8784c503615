"""The optimizer's two calls of every training step, without torch's per-call wrappers.

`optimizer.zero_grad()` and `optimizer.step()` each pass through a profiler `record_function`,
a dynamo guard, hook dispatch and the scheduler's call tracker: for the small models calbench
trains on the CPU that was a tenth of a step (about 250 of 600 microseconds for the quickstart's
MLP, against SGD's own arithmetic). `StepFunctions` does the same arithmetic directly:

- zero_grad: `p.grad = None` for every parameter of every group (what `zero_grad(set_to_none=True)`
  does inside its wrappers);
- step, for a plain `torch.optim.SGD` (the quickstart's optimizer) with no step hooks and no
  foreach / fused / differentiable option: the group loop of `SGD.step` (`_init_group`, then the
  functional `torch.optim.sgd.sgd` with the group's values, then the momentum buffers back into the
  state), under `torch.no_grad()` as `SGD.step` runs. Same kernels in the same order, so the
  parameters, the momentum buffers and `optimizer.state_dict()` are bitwise those of `step()`
  (tests/engine/test_optim_step.py checks it step by step). Any other optimizer or setting, or a
  torch whose SGD lacks what this relies on, takes `optimizer.step()` itself.
"""

from __future__ import annotations

from typing import Callable

import torch


def _has_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    from torch.optim import optimizer as base

    hooks = (getattr(base, "_global_optimizer_pre_hooks", None), getattr(base, "_global_optimizer_post_hooks", None),
             getattr(optimizer, "_optimizer_step_pre_hooks", None), getattr(optimizer, "_optimizer_step_post_hooks", None))
    return any(h is None or len(h) > 0 for h in hooks)


def direct_sgd_possible(optimizer: torch.optim.Optimizer) -> bool:
    """True for a plain SGD whose step this module can take without changing a bit."""
    if type(optimizer) is not torch.optim.SGD or not hasattr(optimizer, "_init_group"):
        return False
    if _has_step_hooks(optimizer) or getattr(optimizer, "grad_scale", None) is not None \
            or getattr(optimizer, "found_inf", None) is not None:
        return False
    return all(not g.get("foreach") and not g.get("fused") and not g.get("differentiable")
               and not g.get("maximize") for g in optimizer.param_groups)


def _sgd_step(optimizer: torch.optim.SGD) -> None:
    """`SGD.step()`'s body (torch 2.x) for the groups as they are now."""
    from torch.optim.sgd import sgd

    with torch.no_grad():
        for group in optimizer.param_groups:
            params, grads, buffers = [], [], []
            has_sparse_grad = optimizer._init_group(group, params, grads, buffers)
            sgd(params, grads, buffers, weight_decay=group["weight_decay"], momentum=group["momentum"],
                lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                maximize=group["maximize"], has_sparse_grad=has_sparse_grad, foreach=group["foreach"],
                fused=group["fused"], grad_scale=None, found_inf=None)
            if group["momentum"] != 0:
                for p, buffer in zip(params, buffers):
                    optimizer.state[p]["momentum_buffer"] = buffer
    optimizer._opt_called = True     # what the scheduler's wrapper of step() records


class StepFunctions:
    """(zero_grad, step) of one optimizer; decided once, when the run is built."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.direct = direct_sgd_possible(optimizer)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        if self.direct:
            _sgd_step(self.optimizer)
        else:
            self.optimizer.step()


def step_functions(optimizer: torch.optim.Optimizer) -> tuple[Callable[[], None], Callable[[], None]]:
    functions = StepFunctions(optimizer)
    return functions.zero_grad, functions.step

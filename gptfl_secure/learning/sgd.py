"""SGD with momentum and weight decay, without ``torch.optim``.

The first ``torch.optim`` optimizer a process builds imports ``torch._dynamo`` (about 1 s of CPU
with torch 2.13, as much again as ``import torch``). A Flower node handles every message in a
fresh process, so each local-training message would pay it on every node; the sim's worker
processes and a fresh ``python -m gptfl_secure.sim`` would too. :class:`MomentumSgd` performs,
tensor by tensor, the floating-point operations of ``torch.optim.SGD``'s single-tensor update
(the path it takes for CPU tensors) with ``dampening=0`` and ``nesterov=False``, so on CPU its
steps are bit-identical to ``torch.optim.SGD(params, lr, momentum, weight_decay=...)``
(``tests/learning/test_sgd.py``). On CUDA, where ``torch.optim.SGD`` defaults to its multi-tensor
kernels, the two agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def sgd_update(param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor | None, *, lr: float,
               momentum: float, weight_decay: float) -> torch.Tensor | None:
    """One ``torch.optim.SGD`` update of ``param`` in place (call under ``torch.no_grad``)::

        g <- g + weight_decay * p                      (if weight_decay != 0)
        b <- g on the first step, else momentum * b + g (if momentum != 0; then g <- b)
        p <- p - lr * g

    ``buf`` is the momentum buffer (None before the first step; updated in place after it).
    Returns the buffer to keep: the new one on the first step, else ``buf``."""
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if momentum != 0:
        if buf is None:
            buf = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad, alpha=1)
        grad = buf
    param.add_(grad, alpha=-lr)
    return buf


class MomentumSgd:
    """``step()`` applies :func:`sgd_update` to every parameter with a gradient, each with its
    own momentum buffer; ``zero_grad()`` sets every gradient to None (``torch.optim``'s
    ``set_to_none=True``)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, param in enumerate(self.params):
            if param.grad is not None:
                self._buffers[i] = sgd_update(param, param.grad, self._buffers[i], lr=self.lr,
                                              momentum=self.momentum,
                                              weight_decay=self.weight_decay)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

"""Opt-in compiled sampling for fixed shapes on CUDA: the whole fixed-NFE sampler loop as one CUDA graph.

A sampler's plan (times, orders, α, σ, λ, the E-TSDM conditions) is fixed once the sampler, NFE and
schedule are, and every update is a handful of tensor operations whose coefficients are Python
floats. So one :func:`~etsdm.samplers.sample` call can be captured in a CUDA graph
(``torch.cuda.graph``) and replayed: the host-side work (the Python loop, the condition map, the
coefficient arithmetic, kernel launches) happens once, at capture, and each replay costs the
network's kernels plus the few update kernels. That is what small models on a GPU need: there the
Python loop (~100 µs per step) would otherwise cost as much as the forward itself.

    captured = CapturedSampler(denoiser, noise, schedule, "ddim", 20)   # warm-up + capture
    x = captured(noise)            # replay: identical to sample(denoiser, noise, schedule, "ddim", 20)

Conditional models (issue 10): ``CapturedSampler(..., cond={"labels": y})`` captures with the
network's keyword inputs; each call then passes its own cond of the same keys, shapes and dtypes,
copied into the graph's static inputs like the noise (``captured(noise, cond={"labels": y2})``).
A guided Denoiser (:func:`etsdm.guidance.guided`) is captured like any other.

Options: ``compile`` also wraps the raw network in ``torch.compile`` before capture (``True``:
torch's default mode, kernel fusion that compiles in seconds; or a mode name such as
``"max-autotune-no-cudagraphs"``, which autotunes for minutes; never a ``cudagraphs`` mode: the
graph is ours), in a copy of the model (:meth:`~etsdm.denoiser.Denoiser.with_net`); ``autocast``
(e.g. ``torch.bfloat16``) runs the network under ``torch.autocast``. Ancestral / η > 0 samplers
draw their noise from the default CUDA generator (graph-safe: each replay draws fresh noise) or
from a CUDA ``generator`` registered with the graph.

``graph=False`` runs the same call eagerly (the reference the GPU check compares against; what a
CPU gets): the API is identical, so results can be compared within float32 / bf16 tolerance.
bench/gpu_sampling.py measures it against the same number of bare (captured) forwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .denoiser import Cond, Denoiser, check_cond
from .samplers import sample
from .schedules import Schedule


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield


class CapturedSampler:
    """``sample(model, noise, schedule, sampler, nfe, **options)`` captured once, replayed per call.

    Args:
        model: a Denoiser (or any model :func:`~etsdm.samplers.sample` takes), on ``noise``'s device.
        noise: an example x_T; fixes the shape, dtype and device of every later call.
        schedule, sampler, nfe, options: as for :func:`~etsdm.samplers.sample` (``progress`` and
            ``callback`` are not allowed: nothing host-side runs during a replay).
        graph: capture a CUDA graph (default: True on CUDA); False runs eagerly each call.
        compile: wrap the raw network in ``torch.compile`` before capture (``True``: default mode;
            a string: that mode); ``model`` itself is not changed.
        autocast: run under ``torch.autocast`` with this dtype (e.g. torch.bfloat16), or None.
        warmup: eager calls before capture (cuDNN / compile autotuning happens there).
        cond: example network keyword inputs (labels, lowres; one row per noise row): fixes the keys,
            shapes, dtypes and devices of every later call's cond. None: unconditional.

    Raises:
        ValueError: graph=True off CUDA; progress / callback given; a call with another shape,
            dtype or device than the example, or another cond layout than the example's.
    """

    def __init__(self, model: Any, noise: Tensor, schedule: Schedule, sampler: str = "ddim", nfe: int = 50, *,
                 graph: bool | None = None, compile: bool | str = False, autocast: torch.dtype | None = None,
                 warmup: int = 2, cond: Cond | None = None, **options: Any):
        if options.get("progress") or options.get("callback") is not None:
            raise ValueError("CapturedSampler: progress and callback cannot run inside a captured graph")
        self.graph_enabled = noise.is_cuda if graph is None else bool(graph)
        if self.graph_enabled and not noise.is_cuda:
            raise ValueError(f"CapturedSampler: graph=True needs a CUDA tensor, got noise on {noise.device}")
        if compile:
            model = _compiled(model, compile)
        self.model, self.schedule, self.sampler, self.nfe = model, schedule, sampler, nfe
        self.options, self.autocast = options, autocast
        cond = check_cond(cond, noise.shape[0], "CapturedSampler")
        self._like = (tuple(noise.shape), noise.dtype, noise.device)
        self._cond_like = _layout(cond)
        self._graph: torch.cuda.CUDAGraph | None = None
        if self.graph_enabled:
            self._capture(noise, cond, warmup)

    def _run(self, noise: Tensor, cond: dict[str, Tensor]) -> Tensor:
        with torch.inference_mode(), _autocast(noise.device, self.autocast):
            return sample(self.model, noise, self.schedule, self.sampler, self.nfe, cond=cond, **self.options)

    def _capture(self, noise: Tensor, cond: dict[str, Tensor], warmup: int) -> None:
        self._static_noise = noise.detach().clone()
        self._static_cond = {key: value.detach().clone() for key, value in cond.items()}
        side = torch.cuda.Stream(device=noise.device)
        side.wait_stream(torch.cuda.current_stream(noise.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._run(self._static_noise, self._static_cond)
        torch.cuda.current_stream(noise.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        generator = self.options.get("generator")
        if generator is not None:
            self._graph.register_generator_state(generator)
        with torch.cuda.graph(self._graph):
            self._static_out = self._run(self._static_noise, self._static_cond)

    def __call__(self, noise: Tensor, cond: Cond | None = None) -> Tensor:
        if (tuple(noise.shape), noise.dtype, noise.device) != self._like:
            raise ValueError(f"CapturedSampler: captured for shape/dtype/device {self._like}, got "
                             f"{(tuple(noise.shape), noise.dtype, noise.device)}; build another one")
        cond = check_cond(cond, noise.shape[0], "CapturedSampler")
        if _layout(cond) != self._cond_like:
            raise ValueError(f"CapturedSampler: captured for cond {self._cond_like or 'none'}, got "
                             f"{_layout(cond) or 'none'}; pass the same keys, shapes and dtypes or build another one")
        if self._graph is None:
            return self._run(noise, cond)
        self._static_noise.copy_(noise)
        for key, value in cond.items():
            self._static_cond[key].copy_(value)
        self._graph.replay()
        return self._static_out.clone()


def _layout(cond: dict[str, Tensor]) -> dict[str, tuple]:
    """Keys -> (shape, dtype, device): what a captured graph's cond inputs fix."""
    return {key: (tuple(value.shape), value.dtype, value.device) for key, value in sorted(cond.items())}


class CapturedForwards:
    """The floor for :class:`CapturedSampler`: ``n`` bare network calls ``net(x, c, **cond)`` (inputs
    prebuilt, nothing else) captured as one CUDA graph (``graph=False``: eager)."""

    def __init__(self, net: Any, x: Tensor, conditions: list[Tensor], *, graph: bool | None = None,
                 autocast: torch.dtype | None = None, warmup: int = 2, cond: Cond | None = None):
        self.net, self.x, self.conditions, self.autocast = net, x, conditions, autocast
        self.cond = check_cond(cond, x.shape[0], "CapturedForwards")
        self._graph: torch.cuda.CUDAGraph | None = None
        if x.is_cuda if graph is None else graph:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._run()
            torch.cuda.current_stream(x.device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._out = self._run()

    def _run(self) -> Tensor:
        out = self.x
        with torch.inference_mode(), _autocast(self.x.device, self.autocast):
            for c in self.conditions:
                out = self.net(self.x, c, **self.cond)
        return out

    def __call__(self) -> Tensor:
        if self._graph is None:
            return self._run()
        self._graph.replay()
        return self._out


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # torch.compile modes that leave CUDA graphs to us


def _compiled(model: Any, compile: bool | str) -> Any:
    """A copy of ``model`` around ``torch.compile(model.net, mode=...)`` (True: the default mode)."""
    mode = "default" if compile is True else compile
    if mode not in COMPILE_MODES:
        raise ValueError(f"CapturedSampler: compile must be True or one of {', '.join(COMPILE_MODES)} (the other "
                         f"torch.compile modes capture CUDA graphs themselves), got {compile!r}")
    if not isinstance(model, Denoiser):
        raise ValueError(f"CapturedSampler: compile needs a Denoiser (its raw network is compiled), got "
                         f"{type(model).__name__}")
    return model.with_net(torch.compile(model.net, mode=mode))

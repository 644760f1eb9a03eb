"""Lipschitz-curve speed: ``lipschitz_curve`` wall time / the same number of bare network forwards.

The curve K(t, t + 1) over M timesteps with N data samples costs exactly ⌈2NM / B⌉ network calls
of batch B (the last one partial). The floor is those same calls made directly on the raw
network, on exactly the inputs and conditions the curve gives it (recorded once, prebuilt; a
network's cost can depend on its input values), nothing else. The ratio is the curve's own overhead:
its once-per-curve plan (α_t, σ_t and the conditions of all t and t′), and per call the gathers,
drawing x_t and the norms; the goal (issue 11) is ratio <= 1.05.
It also times the curve with a network that costs nothing (the overhead alone), and prints
(bare + overhead) / bare, which a machine loaded by other processes distorts far less, and the
peak memory of one curve and of the bare forwards (CUDA: peak allocated; CPU: growth of the
process's peak RSS, measured in that order before the timing, so the curve's figure is what it
needs beyond the forwards).

Networks: etsdm's tiny UNet preset (diffusers UNet2DModel, 1x8x8 digits, ~1M parameters) and
its tiny MLP preset on 2-D data, both behind a Denoiser with the E-TSDM condition map.
Fastest of ``--repeats`` (MLP: ``--mlp-repeats``) interleaved rounds after a warm-up, under
torch.inference_mode, in wall time and (CPU) in process CPU time, and the median of the rounds'
curve / bare ratios; the 1-minute load average before and after.

    python bench/lipschitz.py --threads 1     # CPU, 1-3 minutes
    python bench/lipschitz.py --device cuda --samples 256 --batch 4096
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import time

import torch

from _memory import cuda_peak_mb
from etsdm import Denoiser, TimestepSharing, make_schedule
from etsdm.analysis import lipschitz_curve, lipschitz_times
from etsdm.nets.presets import make_net


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(fn, device: str) -> float:
    """Peak memory of one call: CUDA peak allocated; CPU: how much the process's peak RSS grows."""
    if device.startswith("cuda"):
        return cuda_peak_mb(fn)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # Linux: KiB


def _time_rounds(fns, repeats: int, device: str) -> tuple[list[list[float]], list[list[float]]]:
    """Wall and process CPU times of each function in ``repeats`` interleaved rounds (a, b, c, a, b,
    c, ...), after a warm-up. On a shared machine other processes only ever add time, so the minimum
    is the least disturbed measurement; CPU time (one intra-op thread) leaves out the time the core
    was given to other processes, though not their cache and memory-bandwidth contention."""
    for fn in fns:  # warm-up
        fn()
    _sync(device)
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(time.process_time() - start_cpu)
    return wall, cpu


def _ratios(rounds: list[list[float]], calls: int) -> str:
    """curve / bare of the fastest rounds, the median of the rounds' own ratios, and the estimate
    (bare + overhead alone) / bare, from the (bare, curve, overhead) rounds."""
    bare, curve, free = (min(r) for r in rounds)
    per_round = statistics.median(c / b for b, c in zip(rounds[0], rounds[1], strict=True))
    return (
        f"curve {curve * 1e3:.1f} ms, bare {bare * 1e3:.1f} ms, ratio {curve / bare:.3f} "
        f"(median of rounds' ratios {per_round:.3f}), overhead alone {free * 1e3:.2f} ms "
        f"({free / calls * 1e6:.0f} us/call) -> (bare + overhead) / bare {(bare + free) / bare:.3f}"
    )


def bench(name: str, net: torch.nn.Module, shape: tuple[int, ...], args: argparse.Namespace, repeats: int) -> None:
    device = args.device
    net = net.to(device).eval()
    schedule = make_schedule("linear")
    den = Denoiser(net, schedule, "eps", TimestepSharing(100, 5, T=1000))
    x0 = torch.randn(args.samples, *shape, device=device).clamp(-1, 1)
    times = lipschitz_times(schedule, t_end=args.t_end)
    n_calls = math.ceil(2 * args.samples * len(times) / args.batch)

    def curve(model=den) -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        lipschitz_curve(model, x0, schedule, times, batch_size=args.batch, generator=gen)

    # the same curve with a network that costs nothing: the estimator's own overhead, which is
    # what the ratio measures, and which a loaded machine distorts far less than the forwards
    free = Denoiser(lambda x, c: x, schedule, "eps", TimestepSharing(100, 5, T=1000))
    # the floor: the network on exactly the inputs (x, c) the curve gives it (recorded through a
    # free network: the inputs do not depend on the outputs), prebuilt, nothing else
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    recorder = Denoiser(lambda x, c: inputs.append((x.clone(), c.clone())) or x, schedule, "eps",
                        TimestepSharing(100, 5, T=1000))
    with torch.inference_mode():
        curve(recorder)
    assert len(inputs) == n_calls, (len(inputs), n_calls)

    def bare() -> None:
        for x, c in inputs:
            net(x, c)

    with torch.inference_mode():
        mem_bare, mem_curve = _peak_mb(bare, device), _peak_mb(curve, device)
        load = os.getloadavg()[0]
        wall, cpu = _time_rounds([bare, curve, lambda: curve(free)], repeats, device)
    print(f"{name:<5} N={args.samples} M={len(times)} B={args.batch} calls={n_calls}, {repeats} rounds, "
          f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}; peak memory: bare {mem_bare:.1f} MB, "
          f"curve +{mem_curve:.1f} MB")
    print(f"  wall: {_ratios(wall, n_calls)}")
    if device == "cpu":
        print(f"  cpu:  {_ratios(cpu, n_calls)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=32, help="N data samples per timestep")
    parser.add_argument("--t-end", type=int, default=199, help="last t (M = t_end + 1 timesteps)")
    parser.add_argument("--batch", type=int, default=512, help="examples per network call")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (UNet)")
    parser.add_argument("--mlp-repeats", type=int, default=30, help="interleaved rounds (MLP: ~0.2 s each)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench("unet", make_net("unet", preset="tiny", in_channels=1), (1, 8, 8), args, args.repeats)
    bench("mlp", make_net("mlp", preset="tiny", dim=2), (2,), args, args.mlp_repeats)


if __name__ == "__main__":
    main()

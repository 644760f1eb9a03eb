"""Compiled sampling on a GPU: etsdm's CUDA-graph path (etsdm.compiled) vs eager vs bare forwards.

For each network / batch it times, median of ``--repeats`` after warm-up (CUDA events):

* ``eager``      — ``sample(denoiser, noise, ...)`` as a user calls it (E-TSDM condition map on);
* ``graph``      — the same call captured once by ``CapturedSampler`` and replayed;
* ``graph+cmp``  — the same with the raw network in ``torch.compile`` (``--compile``; slow to build);
* ``bare eager`` — NFE bare ``net(x, c)`` calls (inputs prebuilt); ``bare graph`` — those captured.

and prints ``graph/bare graph`` (goal: <= 1.02, the sampler costs what its forwards cost) and
``eager/graph`` (the end-to-end speedup of the opt-in path), with the max |graph − eager| of the
samples (same noise; identical plans). Networks: the tiny UNet (1x8x8) and small UNet (3x16x16) at
batch 1 and 64 in float32, and Table A1's ``normal`` UNet (3x256x256) at batch 16 under bf16 autocast.

    python bench/gpu_sampling.py                       # CUDA only; about 2-4 minutes on an H200
    python bench/gpu_sampling.py --nets tiny --batches 1 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from etsdm import Denoiser, make_schedule
from etsdm.compiled import CapturedForwards, CapturedSampler
from etsdm.conditioning import TimestepSharing
from etsdm.nets.presets import make_net
from etsdm.samplers import plan

SHAPES = {"tiny": (1, 8), "small": (3, 16), "normal": (3, 256)}


def _time(fn, repeats: int) -> float:
    """Median milliseconds of fn() over ``repeats`` (CUDA events, after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_case(name: str, batch: int, sampler: str, nfe: int, repeats: int, use_compile: bool) -> dict:
    channels, res = SHAPES[name]
    autocast = torch.bfloat16 if name == "normal" else None
    torch.manual_seed(0)
    net = make_net("unet", preset=name, in_channels=channels).cuda().eval()
    schedule = make_schedule("linear")
    den = Denoiser(net, schedule, "eps", TimestepSharing(100, 5, T=1000))
    noise = torch.randn(batch, channels, res, res, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    t0 = time.perf_counter()
    eager = CapturedSampler(den, noise, schedule, sampler, nfe, graph=False, autocast=autocast)
    graph = CapturedSampler(den, noise, schedule, sampler, nfe, autocast=autocast)
    build_s = time.perf_counter() - t0
    times, _ = plan(schedule, sampler, nfe)
    conds = [den.net_condition(float(t), noise) for t in times[:nfe]]
    bare_e = CapturedForwards(net, noise, conds, graph=False, autocast=autocast)
    bare_g = CapturedForwards(net, noise, conds, autocast=autocast)
    row = {"net": name, "batch": batch, "sampler": sampler, "nfe": nfe, "dtype": "bf16" if autocast else "fp32",
           "eager": _time(lambda: eager(noise), repeats), "graph": _time(lambda: graph(noise), repeats),
           "bare_eager": _time(bare_e, repeats), "bare_graph": _time(bare_g, repeats), "build_s": build_s}
    row["maxdiff"] = float((graph(noise) - eager(noise)).abs().max())
    if use_compile:
        t0 = time.perf_counter()
        den_c = Denoiser(net, schedule, "eps", TimestepSharing(100, 5, T=1000))
        comp = CapturedSampler(den_c, noise, schedule, sampler, nfe, compile=True, autocast=autocast)
        row["compile_build_s"] = time.perf_counter() - t0
        row["graph_cmp"] = _time(lambda: comp(noise), repeats)
        row["maxdiff_cmp"] = float((comp(noise) - eager(noise)).abs().max())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=["tiny", "small", "normal"], choices=list(SHAPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--normal-batch", type=int, default=16)
    ap.add_argument("--samplers", nargs="+", default=["ddim:20", "dpm-solver-3:20"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile + graph (tiny/small only)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_sampling.py needs CUDA")
    torch.backends.cudnn.benchmark = True
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}")
    head = (f"{'net':7}{'batch':>6} {'sampler':15}{'NFE':>4} {'dtype':5}{'eager ms':>10}{'graph ms':>10}"
            f"{'bare-e ms':>10}{'bare-g ms':>10}{'graph/bare-g':>13}{'eager/graph':>12}{'max|diff|':>11}")
    print(head + ("  compile: graph ms, eager/graph, max|diff|, build s" if args.compile else ""))
    for name in args.nets:
        for batch in [args.normal_batch] if name == "normal" else args.batches:
            for spec in args.samplers:
                sampler, nfe = spec.split(":")
                r = run_case(name, batch, sampler, int(nfe), args.repeats, args.compile and name != "normal")
                line = (f"{r['net']:7}{r['batch']:>6} {r['sampler']:15}{r['nfe']:>4} {r['dtype']:5}{r['eager']:>10.2f}"
                        f"{r['graph']:>10.2f}{r['bare_eager']:>10.2f}{r['bare_graph']:>10.2f}"
                        f"{r['graph'] / r['bare_graph']:>13.3f}{r['eager'] / r['graph']:>12.2f}{r['maxdiff']:>11.2e}")
                if "graph_cmp" in r:
                    line += (f"  {r['graph_cmp']:.2f}, {r['eager'] / r['graph_cmp']:.2f}, {r['maxdiff_cmp']:.1e}, "
                             f"{r['compile_build_s']:.0f}")
                print(line, flush=True)


if __name__ == "__main__":
    main()

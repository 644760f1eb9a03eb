"""Compiled sampling on a GPU: etsdm's CUDA-graph path (etsdm.compiled) vs eager vs bare forwards.

For each network / batch / sampler it times, median of ``--repeats`` after warm-up (CUDA events; CPU:
wall clock):

* ``eager``      — ``sample(denoiser, noise, ...)`` as a user calls it (E-TSDM condition map on);
* ``graph``      — the same call captured once by ``CapturedSampler`` and replayed;
* ``bare-e``     — NFE bare ``net(x, c)`` calls (inputs prebuilt); ``bare-g`` — those captured;
* with ``--compile`` (not for ``normal``): ``cmp`` — the graph path with the raw network in
  ``torch.compile(mode=--compile-mode, dynamic=False)``, and ``bare-cmp`` — the NFE compiled
  forwards captured. The default mode (``CapturedSampler(compile=True)``'s) does no autotuning;
  ``max-autotune-no-cudagraphs`` (``compile="max-autotune-no-cudagraphs"``) did not finish its
  autotuning in an earlier GPU check's 150 s.
  ``reduce-overhead`` would nest inductor's own CUDA graphs inside ours: not offered.

Prints ``graph/bare-g`` (goal: <= 1.02, the sampler costs what its forwards cost), ``eager/graph``
(the end-to-end speed-up of the opt-in path) and the max |graph − eager| of the samples (same
noise, identical plans) relative to max |eager|, checked against the dtype's tolerance (bf16 3e-2,
fp32 1e-3: float32 convolutions may run in TF32) — ``ok`` or ``MISMATCH``; with ``--compile`` the
same for ``cmp``. Peak memory (CUDA only): ``peak MB`` — the most one warm eager call allocates
beyond the network and its inputs (torch.cuda.max_memory_allocated), ``graph MB`` — what a captured
sampler keeps reserved (its private memory pool and static tensors). Networks: the tiny UNet (1x8x8)
and small UNet (3x16x16) at batch 1 and 64 in float32, and Table A1's ``normal`` UNet (3x256x256,
``--normal-res``) at batch 16 under bf16 autocast.

    python bench/gpu_sampling.py                       # CUDA; about 2-4 minutes on an H200
    python bench/gpu_sampling.py --nets normal --samplers ddim:20 --repeats 3
    python bench/gpu_sampling.py --nets tiny --batches 1 64 --samplers ddim:20 --compile
    python bench/gpu_sampling.py --device cpu --nets tiny --batches 2 --samplers ddim:2 --repeats 1  # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from _memory import cuda_peak_mb
from etsdm import Denoiser, make_schedule
from etsdm.compiled import COMPILE_MODES, CapturedForwards, CapturedSampler
from etsdm.conditioning import TimestepSharing
from etsdm.nets.presets import make_net
from etsdm.samplers import plan

SHAPES = {"tiny": (1, 8), "small": (3, 16), "normal": (3, 256)}  # channels, resolution
TOLERANCE = {"bf16": 3e-2, "fp32": 1e-3}  # max |diff| / max |eager|


def _time(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: bool = True) -> tuple[float, Any]:
    """(median milliseconds of fn() over ``repeats`` calls, after one warm-up call unless ``warmup`` is
    False, the last output)."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """What one (warm: no cuDNN autotuning) call allocates at its peak beyond what was allocated before;
    None off CUDA (a warm call no longer grows the process's peak RSS)."""
    return cuda_peak_mb(fn) if device.type == "cuda" else None


def _held_mb(build: Callable[[], Any], device: torch.device) -> tuple[Any, float | None]:
    """(build(), the memory it keeps reserved: CUDA reserved after emptying the cache, before vs after)."""
    if device.type != "cuda":
        return build(), None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    built = build()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # a live graph's private pool is not released
    return built, (torch.cuda.memory_reserved() - before) / 2**20


def _rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def _progress(msg: str) -> None:
    print(f"  . {msg}", file=sys.stderr, flush=True)  # partial results survive a timeout


def run_case(name: str, batch: int, res: int, sampler: str, nfe: int, args: argparse.Namespace,
             use_compile: bool) -> dict:
    device = torch.device(args.device)
    graph = device.type == "cuda"
    channels = SHAPES[name][0]
    autocast = torch.bfloat16 if name == "normal" else None
    tag = f"{name} b{batch} {sampler}:{nfe}"
    torch.manual_seed(0)
    net = make_net("unet", preset=name, in_channels=channels).to(device).eval()
    schedule = make_schedule("linear")

    def denoiser(model: Any) -> Denoiser:
        return Denoiser(model, schedule, "eps", TimestepSharing(100, 5, T=1000))

    den = denoiser(net)
    noise = torch.randn(batch, channels, res, res, device=device,
                        generator=torch.Generator(device).manual_seed(1))
    row: dict[str, Any] = {"net": name, "batch": batch, "sampler": sampler, "nfe": nfe,
                           "dtype": "bf16" if autocast else "fp32"}
    eager = CapturedSampler(den, noise, schedule, sampler, nfe, graph=False, autocast=autocast)
    row["eager"], x_eager = _time(lambda: eager(noise), args.repeats, device)
    row["peak_mb"] = _peak_mb(lambda: eager(noise), device)
    _progress(f"{tag} eager {row['eager']:.2f} ms, peak {_mb(row['peak_mb'])} MB")
    t0 = time.perf_counter()  # warm-up calls and capture
    captured, row["graph_mb"] = _held_mb(
        lambda: CapturedSampler(den, noise, schedule, sampler, nfe, graph=graph, autocast=autocast), device)
    row["build_s"] = time.perf_counter() - t0
    row["graph"], x_graph = _time(lambda: captured(noise), args.repeats, device)
    row["diff"] = _rel_diff(x_graph, x_eager)
    _progress(f"{tag} graph {row['graph']:.2f} ms (built in {row['build_s']:.1f} s), rel diff {row['diff']:.1e}")
    times, _ = plan(schedule, sampler, nfe)
    conds = [den.net_condition(float(t), noise) for t in times[:nfe]]
    row["bare_eager"], _ = _time(CapturedForwards(net, noise, conds, graph=False, autocast=autocast),
                                 args.repeats, device, warmup=False)  # the network is warm
    row["bare_graph"], _ = _time(CapturedForwards(net, noise, conds, graph=graph, autocast=autocast),
                                 args.repeats, device)
    _progress(f"{tag} bare eager {row['bare_eager']:.2f} ms, bare graph {row['bare_graph']:.2f} ms")
    if use_compile:
        compiled = torch.compile(net, mode=args.compile_mode, dynamic=False)
        t0 = time.perf_counter()  # compiles in the warm-up calls before capture (no graph: in the first call)
        comp = CapturedSampler(denoiser(compiled), noise, schedule, sampler, nfe, graph=graph, autocast=autocast)
        comp(noise)
        _sync(device)
        row["compile_s"] = time.perf_counter() - t0
        row["cmp"], x_cmp = _time(lambda: comp(noise), args.repeats, device)
        row["diff_cmp"] = _rel_diff(x_cmp, x_eager)
        row["bare_cmp"], _ = _time(CapturedForwards(compiled, noise, conds, graph=graph, autocast=autocast),
                                   args.repeats, device)
    return row


def _verdict(diff: float, dtype: str) -> str:
    return "ok" if diff <= TOLERANCE[dtype] else "MISMATCH"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_row(r: dict) -> str:
    line = (f"{r['net']:7}{r['batch']:>6} {r['sampler']:13}{r['nfe']:>4} {r['dtype']:5}{r['eager']:>10.2f}"
            f"{r['graph']:>10.2f}{r['bare_eager']:>10.2f}{r['bare_graph']:>10.2f}"
            f"{r['graph'] / r['bare_graph']:>13.3f}{r['eager'] / r['graph']:>12.2f}"
            f"{r['diff']:>10.1e} {_verdict(r['diff'], r['dtype']):8}{_mb(r['peak_mb']):>9}{_mb(r['graph_mb']):>9}")
    if "cmp" in r:
        line += (f" | cmp {r['cmp']:.2f} ms, bare-cmp {r['bare_cmp']:.2f} ms, cmp/bare-cmp "
                 f"{r['cmp'] / r['bare_cmp']:.3f}, eager/cmp {r['eager'] / r['cmp']:.2f}, graph/cmp "
                 f"{r['graph'] / r['cmp']:.2f}, rel diff {r['diff_cmp']:.1e} {_verdict(r['diff_cmp'], r['dtype'])}, "
                 f"compile (build + first call) {r['compile_s']:.1f} s")
    return line


def _parse_spec(spec: str) -> tuple[str, int]:
    sampler, _, nfe = spec.partition(":")
    if not nfe.isdigit() or int(nfe) < 1:
        raise SystemExit(f"--samplers: expected SAMPLER:NFE with NFE >= 1 (e.g. ddim:20), got {spec!r}")
    return sampler, int(nfe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test (no graphs: graph = eager)")
    ap.add_argument("--nets", nargs="+", default=["tiny", "small", "normal"], choices=list(SHAPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64], help="batches of tiny and small")
    ap.add_argument("--normal-batch", type=int, default=16)
    ap.add_argument("--normal-res", type=int, default=SHAPES["normal"][1],
                    help="resolution of the normal UNet (a multiple of 32; smaller only for a smoke test)")
    ap.add_argument("--samplers", nargs="+", default=["ddim:20", "dpm-solver-3:20"], help="SAMPLER:NFE")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also torch.compile + graph (tiny and small only)")
    ap.add_argument("--compile-mode", default="default", choices=COMPILE_MODES)
    args = ap.parse_args()
    specs = [_parse_spec(s) for s in args.samplers]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_sampling.py: --device cuda, but CUDA is not available (--device cpu: smoke test)")
    if args.normal_res % 32:
        raise SystemExit(f"--normal-res: must be a multiple of 32 (the normal UNet halves it 5 times), "
                         f"got {args.normal_res}")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (no CUDA graphs: graph = eager)"
    print(f"device={name} torch={torch.__version__} compile mode={args.compile_mode if args.compile else '-'}")
    print(f"{'net':7}{'batch':>6} {'sampler':13}{'NFE':>4} {'dtype':5}{'eager ms':>10}{'graph ms':>10}"
          f"{'bare-e ms':>10}{'bare-g ms':>10}{'graph/bare-g':>13}{'eager/graph':>12}{'rel diff':>10} "
          f"{'':8}{'peak MB':>9}{'graph MB':>9}", flush=True)
    for net in args.nets:
        batches = [args.normal_batch] if net == "normal" else args.batches
        res = args.normal_res if net == "normal" else SHAPES[net][1]
        for batch in batches:
            for sampler, nfe in specs:
                row = run_case(net, batch, res, sampler, nfe, args, args.compile and net != "normal")
                print(format_row(row), flush=True)


if __name__ == "__main__":
    main()

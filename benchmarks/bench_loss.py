"""Output projection + masked loss, forward and backward: the seed's way, torch's, padless's.

Every candidate computes, from decoder outputs ``hidden [T, B, H]``, the projection to the
vocabulary (``weight [V, H]``, ``bias [V]``) and a masked cross-entropy, then back-propagates
to ``hidden``, ``weight`` and ``bias``:

- ``a-seed``: the seed/tutorial loop (per time step: project, ``softmax``, ``log``,
  ``gather``, ``masked_select``, ``mean``; the step losses summed, then one backward);
- ``b-ce-ignore``: ``F.cross_entropy(ignore_index=PAD)`` on the full padded ``[T*B, V]`` logits;
- ``c-torch-lce``: torch's own ``F.linear_cross_entropy(ignore_index=PAD)`` (its default,
  reference path: full padded logits);
- ``c2-torch-lce-chunked``: the same with ``LinearCrossEntropyOptions(batch_chunk_size=...)``,
  torch's chunked path, given padless's default chunk size (its own default heuristic picks
  chunks of ~16 rows on these shapes and is several times slower still);
- ``d-padless-ce``: padless ``masked_cross_entropy`` on the logits of the selected real rows
  (``F.linear(hidden[mask])``, unchunked);
- ``e-padless-lce``: ``padless.masked_linear_cross_entropy`` (real rows only, chunked).

Protocol: one process; inputs built once per config; each candidate warmed up, then all are
timed in turns (A B C ... A B C ...), ``--reps`` rounds; the median is reported. Peak memory
is measured separately, each candidate in a fresh subprocess: the growth of the process's
peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) over one forward + backward
after a warm-up call, gradients included. Achieved GFLOP/s counts useful work only, the three
``N x H x V`` matmuls of the real tokens (``6 N H V`` FLOPs), and is compared with the fp32
matmul rate measured first on this machine.

    python -m benchmarks.bench_loss            # full run, writes a section of RESULTS.md
    python -m benchmarks.bench_loss --quick    # small shapes, 3 reps, prints only
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.machine import choose_device
from benchmarks.results import publish
from padless import masked_cross_entropy, masked_linear_cross_entropy
from padless._chunked_ce import default_chunk_size

PAD = 0


@dataclass(frozen=True)
class Config:
    name: str
    steps: int  # T
    batch: int  # B
    hidden: int  # H
    vocab: int  # V
    padding: float  # target fraction of pad positions

    def scaled_down(self) -> Config:
        """The ``--quick`` shapes: same layout, a fraction of the work."""
        return Config(self.name, self.steps, self.batch, self.hidden // 4, self.vocab // 8,
                      self.padding)


CONFIGS = [
    Config("tutorial", 10, 64, 500, 7826, 0.4),
    Config("large-vocab", 30, 64, 512, 32000, 0.4),
    Config("long", 100, 32, 512, 16000, 0.6),
]


@dataclass
class Inputs:
    hidden: torch.Tensor  # [T, B, H] leaf
    weight: torch.Tensor  # [V, H] leaf
    bias: torch.Tensor  # [V] leaf
    target: torch.Tensor  # [T, B], PAD at pads
    mask: torch.Tensor  # [T, B] bool

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def zero_grads(self) -> None:
        for t in (self.hidden, self.weight, self.bias):
            t.grad = None


def make_inputs(cfg: Config, device: torch.device, seed: int = 0) -> Inputs:
    """Random decoder outputs and targets; sequence lengths skewed to ``cfg.padding``.

    Lengths are ``1 + round((T - 1) * u ** k)``, ``u`` uniform and stratified (one draw in each
    ``1/B`` of ``[0, 1)``, so the batch's padding stays close to its expectation), ``k`` such
    that the mean length is ``(1 - padding) * T``: ``E[u ** k] = 1 / (k + 1)``. One sequence
    has the full length ``T``.
    """
    g = torch.Generator().manual_seed(seed)
    mean_u_k = ((1.0 - cfg.padding) * cfg.steps - 1.0) / (cfg.steps - 1.0)
    k = 1.0 / mean_u_k - 1.0
    u = (torch.arange(cfg.batch) + torch.rand(cfg.batch, generator=g)) / cfg.batch
    lengths = 1 + ((cfg.steps - 1) * u.pow(k)).round().long()
    lengths = lengths[torch.randperm(cfg.batch, generator=g)]
    lengths[0] = cfg.steps
    mask = torch.arange(cfg.steps)[:, None] < lengths[None, :]
    target = torch.randint(1, cfg.vocab, (cfg.steps, cfg.batch), generator=g)
    target[~mask] = PAD
    hidden = torch.randn(cfg.steps, cfg.batch, cfg.hidden, generator=g)
    weight = torch.randn(cfg.vocab, cfg.hidden, generator=g) / cfg.hidden**0.5
    bias = torch.zeros(cfg.vocab)
    leaves = [t.to(device).requires_grad_() for t in (hidden, weight, bias)]
    return Inputs(*leaves, target.to(device), mask.to(device))


# --- candidates: forward + backward of projection + loss -------------------------------


def seed_loop(x: Inputs) -> None:
    total = 0.0
    for t in range(x.target.shape[0]):
        probs = F.softmax(F.linear(x.hidden[t], x.weight, x.bias), dim=1)
        cross_entropy = -torch.log(torch.gather(probs, 1, x.target[t].view(-1, 1)))
        total = total + cross_entropy.masked_select(x.mask[t].view(-1, 1)).mean()
    total.backward()


def ce_ignore_index(x: Inputs) -> None:
    logits = F.linear(x.hidden, x.weight, x.bias)
    F.cross_entropy(logits.view(-1, logits.shape[-1]), x.target.view(-1),
                    ignore_index=PAD).backward()


def torch_lce(x: Inputs) -> None:
    F.linear_cross_entropy(x.hidden.view(-1, x.hidden.shape[-1]), x.weight, x.target.view(-1),
                           linear_bias=x.bias, ignore_index=PAD).backward()


def torch_lce_chunked(x: Inputs) -> None:
    rows = default_chunk_size(x.weight.shape[0], torch.float32)
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=rows, chunking_method=None)
    F.linear_cross_entropy(x.hidden.view(-1, x.hidden.shape[-1]), x.weight, x.target.view(-1),
                           linear_bias=x.bias, ignore_index=PAD, options=options).backward()


def padless_ce(x: Inputs) -> None:
    logits = F.linear(x.hidden[x.mask], x.weight, x.bias)  # [N, V], real rows only
    masked_cross_entropy(logits, x.target[x.mask], pad_id=PAD).loss.backward()


def padless_lce(x: Inputs) -> None:
    masked_linear_cross_entropy(x.hidden, x.weight, x.target, x.mask, bias=x.bias).loss.backward()


CANDIDATES: dict[str, Callable[[Inputs], None]] = {
    "a-seed": seed_loop,
    "b-ce-ignore": ce_ignore_index,
    "c-torch-lce": torch_lce,
    "c2-torch-lce-chunked": torch_lce_chunked,
    "d-padless-ce": padless_ce,
    "e-padless-lce": padless_lce,
}


# --- measurements ----------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device) -> float:
    """The machine's fp32 matmul rate in GFLOP/s: the best of 6 runs of, at two shapes, a
    linear layer's three products (``X W^T``, ``G W``, ``G^T X``) into preallocated outputs
    (no page faults counted). Shapes: ``X [256, 512]``, ``W [32000, 512]`` (one chunk of the
    large-vocabulary config) and ``[2048, 2048]`` squares."""
    g = torch.Generator().manual_seed(1)
    best_rate = 0.0
    for m, k, n in ((256, 512, 32000), (2048, 2048, 2048)):
        x, w, grad = (torch.randn(*shape, generator=g).to(device)
                      for shape in ((m, k), (n, k), (m, n)))
        outs = [torch.empty(m, n, device=device), torch.empty(m, k, device=device),
                torch.empty(n, k, device=device)]
        for _ in range(6):
            sync(device)
            start = time.perf_counter()
            torch.mm(x, w.t(), out=outs[0])
            torch.mm(grad, w, out=outs[1])
            torch.mm(grad.t(), x, out=outs[2])
            sync(device)
            best_rate = max(best_rate, 6 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best_rate


REFERENCE = "ref: 3 matmuls only"


def reference_matmuls(x: Inputs) -> Callable[[], None]:
    """The three ``N x H x V`` products of the real tokens alone, into preallocated outputs:
    the floor for any exact method, timed in the same rounds as the candidates so that it
    sees the same machine load."""
    rows = x.hidden.detach()[x.mask]  # [N, H]
    weight = x.weight.detach()
    grad = torch.randn(rows.shape[0], weight.shape[0], device=rows.device)  # [N, V]
    outs = [torch.empty_like(grad), torch.empty_like(rows), torch.empty_like(weight)]

    def run() -> None:
        torch.mm(rows, weight.t(), out=outs[0])
        torch.mm(grad, weight, out=outs[1])
        torch.mm(grad.t(), rows, out=outs[2])

    return run


def time_candidates(x: Inputs, names: list[str], reps: int, warmup: int,
                    device: torch.device) -> dict[str, list[float]]:
    """Seconds per forward + backward, candidates (and the matmul reference) in turns:
    A B C ... A B C ..."""
    calls: dict[str, Callable[[], None]] = {
        name: (lambda fn=CANDIDATES[name]: fn(x)) for name in names
    }
    calls[REFERENCE] = reference_matmuls(x)
    for call in calls.values():
        for _ in range(warmup):
            x.zero_grads()
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            x.zero_grads()
            gc.collect()
            sync(device)
            start = time.perf_counter()
            call()
            sync(device)
            times[name].append(time.perf_counter() - start)
    x.zero_grads()
    return times


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_here(cfg: Config, name: str, device: torch.device) -> int:
    """Bytes of peak memory growth of one forward + backward (run in a fresh process)."""
    x = make_inputs(cfg, device)
    CANDIDATES[name](x)  # warm-up: library workspaces, thread pools
    x.zero_grads()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        CANDIDATES[name](x)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    # Hand freed heap back to the OS, then restart the peak-RSS counter (Linux >= 4.0).
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _proc_status_kib("VmRSS")
    CANDIDATES[name](x)
    return (_proc_status_kib("VmHWM") - base) * 1024


def peak_memory(cfg: Config, name: str, device: torch.device) -> int:
    """Run :func:`peak_memory_here` in a fresh subprocess (nothing else allocated there)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_loss", "--device", str(device),
           "--threads", str(torch.get_num_threads()),
           "--memory-probe", json.dumps([cfg.__dict__, name])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------


def targets(rows: dict[str, dict[str, dict[str, float]]], peak: float) -> list[str]:
    """Issue 3's targets, each with the measured figure."""
    lines = []

    def check(label: str, ok: bool, figure: str) -> None:
        lines.append(f"- {'met' if ok else 'MISSED'}: {label} ({figure})")

    tut = rows.get("tutorial")
    if tut:
        e = tut["e-padless-lce"]["ms"]
        for other, want in (("a-seed", 3.0), ("b-ce-ignore", 1.5)):
            ratio = tut[other]["ms"] / e
            check(f"tutorial: e at least {want:g}x faster than {other}", ratio >= want,
                  f"{ratio:.2f}x")
    for cfg_name, cands in rows.items():
        for other in ("c-torch-lce", "c2-torch-lce-chunked"):
            ratio = cands[other]["ms"] / cands["e-padless-lce"]["ms"]
            check(f"{cfg_name}: e not slower than {other}", ratio >= 1.0, f"{ratio:.2f}x")
    large = rows.get("large-vocab")
    if large:
        ratio = large["b-ce-ignore"]["mib"] / large["e-padless-lce"]["mib"]
        check("large-vocab: peak memory of e at most 1/8 of b", ratio >= 8, f"1/{ratio:.1f}")
        share = large["e-padless-lce"]["gflops"] / peak
        ref_share = large["e-padless-lce"]["gflops"] / large[REFERENCE]["gflops"]
        check("large-vocab: e at least 60 % of the fp32 matmul rate", share >= 0.6,
              f"{100 * share:.0f} % of the rate measured first, {100 * ref_share:.0f} % of "
              "the 3-matmul reference timed in the same rounds")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: shapes scaled down, 3 reps, RESULTS.md left alone")
    p.add_argument("--reps", type=int, default=None, help="timed rounds (default 9; quick 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate")
    p.add_argument("--configs", default=",".join(c.name for c in CONFIGS),
                   help="comma-separated subset of " + ", ".join(c.name for c in CONFIGS))
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="comma-separated subset of " + ", ".join(CANDIDATES))
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one memory run
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = choose_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        cfg_fields, name = json.loads(args.memory_probe)
        print(peak_memory_here(Config(**cfg_fields), name, device))
        return 0

    reps = args.reps or (3 if args.quick else 9)
    warmup = 1 if args.quick else args.warmup
    wanted = args.configs.split(",")
    configs = [c.scaled_down() if args.quick else c for c in CONFIGS if c.name in wanted]
    names = [n for n in CANDIDATES if n in args.candidates.split(",")]
    peak = matmul_gflops(device)
    print(f"fp32 matmul rate: {peak:.0f} GFLOP/s", flush=True)

    rows: dict[str, dict[str, dict[str, float]]] = {}
    table = ["| config | candidate | median ms | min-max ms | peak MiB | useful GFLOP/s "
             "| % of matmul rate | % of ref rate | time vs e |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in configs:
        x = make_inputs(cfg, device)
        n = x.n_tokens
        pad = 1 - n / x.mask.numel()
        print(f"\n{cfg.name}: T={cfg.steps} B={cfg.batch} H={cfg.hidden} V={cfg.vocab}, "
              f"{n} real tokens, {100 * pad:.0f} % padding", flush=True)
        times = time_candidates(x, names, reps, warmup, device)
        del x
        flops = 6 * n * cfg.hidden * cfg.vocab
        rows[cfg.name] = {}
        for name in [*names, REFERENCE]:
            ms = 1e3 * statistics.median(times[name])
            mib = float("nan") if name == REFERENCE else peak_memory(cfg, name, device) / 2**20
            rows[cfg.name][name] = {"ms": ms, "mib": mib, "gflops": flops / ms / 1e6}
        ref_rate = rows[cfg.name][REFERENCE]["gflops"]
        e_ms = rows[cfg.name].get("e-padless-lce", {}).get("ms", float("nan"))
        for name in [*names, REFERENCE]:
            r = rows[cfg.name][name]
            lo, hi = 1e3 * min(times[name]), 1e3 * max(times[name])
            line = (f"| {cfg.name} ({100 * pad:.0f} % pad) | {name} | {r['ms']:.1f} "
                    f"| {lo:.0f}-{hi:.0f} | {r['mib']:.0f} | {r['gflops']:.0f} "
                    f"| {100 * r['gflops'] / peak:.0f} % | {100 * r['gflops'] / ref_rate:.0f} % "
                    f"| {r['ms'] / e_ms:.2f}x |").replace("| nan |", "| - |")
            table.append(line)
            print(line, flush=True)
    verdicts = targets(rows, peak) if set(names) == set(CANDIDATES) else []
    body = [
        f"- Device {device}. {reps} timed rounds after {warmup} warm-up calls per candidate; "
        "median. fp32 throughout. Peak MiB: growth of peak RSS over one forward + backward in "
        "a fresh process (gradients included). Useful GFLOP/s: 6 N H V over real tokens only. "
        f"`{REFERENCE}`: the three N x H x V products of the real tokens into preallocated "
        "outputs, timed in the same rounds (same load); `% of ref rate` compares with it.",
        f"- fp32 matmul rate measured first: {peak:.0f} GFLOP/s (best of a linear layer's three "
        "products at 256 x 512 x 32000 and 2048^3, into preallocated outputs)",
        "",
        *table,
        "",
        "Targets (issue 3):",
        "",
        *verdicts,
    ]
    print("\n" + "\n".join(verdicts))
    publish("bench_loss",
            "Loss: projection + masked cross-entropy, forward + backward (`bench_loss.py`)",
            "bench_loss.py", argv, ".", body, write=not (args.quick or args.no_write),
            device=device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``adapterhub bench``: adapterhub vs plain PEFT, side by side, written to a report folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark switching, loading, forward, generation, training, time to accuracy and memory "
                         "against plain PEFT, and concurrent trainings before and after CPU seats",
        description="Measure adapterhub and plain PEFT on the same machine in one run; write bench.json, "
                    "bench.md and PNG plots, and check every promised target (met / MISSED).")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run on the tiny model with few adapters and repeats (seconds, not claims)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: bench-out/)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for generated adapters and the bench registry (default: $ADAPTERHUB_HOME/bench)")
    parser.add_argument("--base", default=None, help="alias, local directory or Hugging Face id (default: the "
                                                     "embedded SmolLM2-135M; the tiny model with --quick)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quantize", default=None, choices=["nf4", "fp4", "int8"],
                        help="quantise the base with bitsandbytes (the whole bench then runs on it)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: as every verb, the cores idle now, at least 1; "
                             "--quick: 1); the report records it; the concurrency area's legs set their own")
    parser.add_argument("--gpu-sizes", action="store_true",
                        help="add a 64 × 256 batch, 32-adapter mixed batches and 32-domain generation")
    parser.add_argument("--only", nargs="+", default=None, metavar="AREA",
                        help="run only these areas: switch, load, forward, generation, training, memory, serve, "
                             "encoder, methods, accuracy (time to 85%% validation accuracy; minutes on a CPU), "
                             "concurrency (two trainings at once, before and after CPU seats), many (serving throughput over "
                             "many registered adapters under Zipf and uniform traffic, and a registry of 10,000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure (median is reported)")
    many = parser.add_argument_group("the many-adapters area (--only many)")
    many.add_argument("--many-counts", type=int, nargs="+", default=None, metavar="N",
                      help="registered adapters per sweep point; the largest is the headline (default 1 8 64 256 1000)")
    many.add_argument("--many-requests", type=int, default=None, help="timed requests per leg (default 96)")
    many.add_argument("--many-warmup-requests", type=int, default=None, help="untimed requests first (default 64)")
    many.add_argument("--many-repeats", type=int, default=None, help="repeats of the headline legs (default 3)")
    many.add_argument("--many-peft-repeats", type=int, default=None,
                      help="how many of those include the plain PEFT server (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, run_bench
    from ..bench.markdown import format_value
    from ..bench.targets import MISSED
    from ._output import print_table

    config = BenchConfig.preset(quick=args.quick, gpu_sizes=args.gpu_sizes, base=args.base, dtype=args.dtype,
                                quantize=args.quantize, device=args.device, threads=args.threads, out=args.out,
                                work=args.work,
                                repeats=args.repeats, areas=tuple(args.only) if args.only else None,
                                many_counts=tuple(args.many_counts) if args.many_counts else None,
                                many_requests=args.many_requests, many_warmup_requests=args.many_warmup_requests,
                                many_repeats=args.many_repeats, many_peft_repeats=args.many_peft_repeats)
    report = run_bench(config, progress=not args.no_progress)
    rows = [(check["target"], format_value(check["value"], check["unit"]), check["status"])
            for check in report["targets"]]
    print_table(rows, ["target", "measured", "status"], title="adapterhub bench: targets")
    for skip in report["skipped"]:
        print(f"not measured: {skip['area']} / {skip['case']}: {skip['reason']}")
    missed = sum(check["status"] == MISSED for check in report["targets"])
    if config.quick:
        print(f"report: {Path(config.out) / 'bench.md'} (quick run: it checks the bench works; no figure is a claim)")
    else:
        print(f"report: {Path(config.out) / 'bench.md'} ({missed} target(s) missed)")
    return 0


"""`gentext doctor`: what a bug report needs to know about this machine and this install."""

from __future__ import annotations

import argparse
import importlib.util
import platform
from pathlib import Path
from typing import Any

from gentext.cli.output import print_json, version_text

EXTRAS = {  # module -> the extra that brings it
    "fastapi": "serve",
    "uvicorn": "serve",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "tensorboard": "tensorboard",
    "sacrebleu": "seq2seq",
    "babel": "corpora",
    "faker": "corpora",
}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report() -> dict[str, Any]:
    import torch  # here, not at the top: the command line is read without torch

    from gentext import hardware, native, threads
    from gentext.models.weights import fast_formats

    cpu = hardware.cpu_report()
    native.prepare(build_now=False)  # loads the compiled kernels if built; builds nothing
    cuda = torch.cuda.is_available()
    auto = hardware.resolve_precision("auto", torch.device("cpu"))
    return {
        "gentext": version_text(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only",
        "cpu": _cpu_name(),
        "cpu_features": cpu["features"],
        "cpu_caps": cpu["caps"],
        "threads": threads.describe(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "precision_auto_cpu": "bf16" if auto == torch.bfloat16 else "fp32",
        "native_bf16": cpu["native_bf16"],
        "weights_cpu": fast_formats(torch.device("cpu")),
        "kernels": native.status(),
        # who makes a lone row's int8 products with the compiled kernels: their own ISA, or fbgemm
        "int8_products": {
            "recurrent": hardware.direct_int8() or "fbgemm",
            "scaled": hardware.direct_int8(scaled=True) or "fbgemm",
        },
        "extras": {module: importlib.util.find_spec(module) is not None for module in EXTRAS},
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    info = report()
    if args.json:
        print_json(info)
        return 0
    t = info["threads"]
    print(f"gentext     {info['gentext']} (Python {info['python']}, torch {info['torch']}, {info['torch_build']})")
    print(f"cpu         {info['cpu']}: {' '.join(info['cpu_features']) or 'no AVX2'}")
    if info["cpu_caps"]:
        print(f"caps        {' '.join(f'{k}={v}' for k, v in info['cpu_caps'].items())} (as a smaller CPU would)")
    print(
        f"threads     {t['threads']} of {t['usable_cpus']} usable cores"
        f"{' (fixed)' if t['fixed'] else ', adapting to other work'}; load average {t['load_average']:.1f}"
    )
    print(f"gpu         {info['gpu'] or 'none usable (training and generation run on the CPU)'}")
    helper = info["kernels"].startswith("compiled") and t["second_core"]
    second = "; a step of a few rows takes a second core while one is free (not in a server)" if helper else ""
    print(f"kernels     the per-token step runs {info['kernels']}{second}")
    if info["kernels"].startswith("compiled"):
        own = {kind: "fbgemm's" if isa == "fbgemm" else f"the kernels' own ({isa})"
               for kind, isa in info["int8_products"].items()}  # fmt: skip
        print(f"            a lone row's int8 products: an RNN's {own['recurrent']}, a minGRU's or Transformer's "
              f"{own['scaled']}")  # fmt: skip
    print(
        f"native      training --precision auto = {info['precision_auto_cpu']}; generation --weights: "
        f"{', '.join(info['weights_cpu'])} (bf16 {'native' if info['native_bf16'] else 'not native here'})"
    )
    missing = sorted({extra for module, extra in EXTRAS.items() if not info["extras"][module]})
    have = sorted({extra for module, extra in EXTRAS.items() if info["extras"][module]} - set(missing))
    print(f"extras      installed: {', '.join(have) or 'none'}; not installed: {', '.join(missing) or 'none'}")
    if missing:
        print(f"            pip install 'gentext[{','.join(missing)}]' adds them")
    return 0


def register(sub) -> None:
    p = sub.add_parser("doctor", help="this machine and install: CPU features, threads, GPU, extras (for bug reports)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

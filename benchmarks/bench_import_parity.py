"""How closely imported jcjohnson/fast-neural-style networks (.t7) reproduce the original's output.

The originals are the Lua graphs of fast-neural-style's ``models.lua`` rebuilt layer by layer in
plain torch, float64, with random weights (``tests/lua_reference.py``; no Lua needed), written as
``.t7`` files and imported with ``fastns.importers.load_jcjohnson``. For each released family and
image size, prints the largest and mean absolute difference from the original's deprocessed,
clamped output, in 1/255 units: of the imported network (fp32), and of ``Stylizer`` at ``fp32`` and
``bf16`` (what ``precision=auto`` picks on CPUs with AMX or AVX-512 BF16).

    python benchmarks/bench_import_parity.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.importers import load_jcjohnson  # noqa: E402
from fastns.stylize import Stylizer  # noqa: E402
from tests import lua_reference as lua  # noqa: E402

FAMILIES = {
    "instance_norm": (lua.INSTANCE_NORM_ARCH, True),
    "eccv16": (lua.ECCV16_ARCH, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["67x53", "64x64", "256x171"], help="HxW")
    parser.add_argument("--seeds", type=int, default=3, help="random networks per family")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"python benchmarks/bench_import_parity.py --sizes {' '.join(args.sizes)} --seeds {args.seeds}\n")
    print("Max (mean) |imported - original| in 1/255 units, worst over the seeds:\n")
    print("| family | size | network fp32 | Stylizer fp32 | Stylizer bf16 |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family, (arch, instance) in FAMILIES.items():
            for size in args.sizes:
                h, w = (int(v) for v in size.split("x"))
                worst = {k: [0.0, 0.0] for k in ("net", "fp32", "bf16")}
                for seed in range(args.seeds):
                    torch.manual_seed(seed)
                    model = lua.build_model(arch, instance)
                    if not instance:
                        lua.calibrate(model, torch.rand(2, 3, 64, 64))
                    lua.round_to(model, torch.float32)
                    path = Path(tmp) / f"{family}.t7"
                    lua.T7Writer().write(path, lua.checkpoint(lua.to_lua(model, torch.float32, True), {}))
                    net, _ = load_jcjohnson(path)
                    x = torch.rand(1, 3, h, w)
                    expected = lua.stylize(model, x)[..., :h, :w]
                    outputs = {
                        "net": net(x),
                        "fp32": Stylizer(net, device="cpu", precision="fp32").stylize(x),
                        "bf16": Stylizer(net, device="cpu", precision="bf16").stylize(x),
                    }
                    for key, y in outputs.items():
                        d = (y.double() - expected).abs() * 255
                        worst[key][0] = max(worst[key][0], d.max().item())
                        worst[key][1] = max(worst[key][1], d.mean().item())
                cells = " | ".join(
                    f"{m:.1e} ({a:.1e})" if m < 0.1 else f"{m:.2f} ({a:.2f})" for m, a in worst.values()
                )
                print(f"| {family} | {h}x{w} | {cells} |")


if __name__ == "__main__":
    main()

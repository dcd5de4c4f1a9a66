"""Load: scripts/stylize.py on a folder of many images and on a long video, with a damaged file or
packet in the middle, under ``/usr/bin/time -v``: peak memory must not grow with the number of
files or frames, and the damage must not stop the rest.

    python benchmarks/bench_load.py                       # 100 and 500 images; 30 s and 120 s of video
    python benchmarks/bench_load.py --images 100 --seconds 10 --model runs/candy/model.safetensors

Each run is a fresh process (as a user runs it): the table gives its wall time, peak resident
memory (max RSS), and what was written. The inputs are synthetic (moving gradients and shapes);
the network is the given model file, or a random-weight half-width network, which costs the same.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.modelfile import save_model  # noqa: E402
from fastns.transformer import TransformerNet  # noqa: E402
from fastns.utils import cpu_name  # noqa: E402


def frame(i: int, w: int, h: int) -> np.ndarray:
    """A moving pattern: gradients, a travelling bar, a circle."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, (i * 3) % 256)], -1).astype(np.uint8)
    img[:, (i * 5) % w : (i * 5) % w + 20] = 230
    cx, cy = (w // 2 + int(w / 4 * np.sin(i / 20))), h // 2
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < (h // 6) ** 2] = (200, 40, 40)
    return img


def make_folder(folder: Path, n: int, size=(320, 240)) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(frame(i, *size)).save(folder / f"{i:05d}.jpg", quality=90)
    (folder / f"{n // 2:05d}.jpg").write_bytes(b"\xff\xd8\xff\xe0 a damaged JPEG in the middle")


def make_video(path: Path, seconds: int, fps: int = 25, size=(640, 480)) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = *size, "yuv420p"
        for i in range(seconds * fps):
            for p in s.encode(av.VideoFrame.from_ndarray(frame(i, *size), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for k in range(middle, middle + 20000):  # damage packets in the middle of the frame data
        data[k] = (data[k] * 7 + 13) % 256
    path.write_bytes(bytes(data))


def timed(args: list[str]) -> dict:
    """Run ``scripts/stylize.py args`` under /usr/bin/time -v: wall seconds, max RSS (MB), status, stderr."""
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        str(ROOT / "scripts" / "stylize.py"),
        *args,
        "progress=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("warning:", "error:"))]
    return {
        "status": proc.returncode,
        "seconds": seconds,
        "rss_mb": rss,
        "messages": lines,
        "stdout": proc.stdout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=int, nargs="+", default=[30, 120])
    parser.add_argument("--model", help="a model file; default: a random-weight half-width network")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or str(save_model(tmp / "half.safetensors", TransformerNet(width=0.5)))
        rows = []
        for n in args.images:
            folder = tmp / f"images_{n}"
            make_folder(folder, n)
            r = timed([f"model={model}", f"input={folder}", f"output={tmp / f'out_{n}'}"])
            written = len(list((tmp / f"out_{n}").glob("*.jpg")))
            rows.append((f"folder of {n} images, 320x240, 1 damaged", r, f"{written} written"))
        for secs in args.seconds:
            clip = tmp / f"clip_{secs}.mp4"
            make_video(clip, secs)
            out = tmp / f"clip_{secs}_out.mp4"
            r = timed([f"model={model}", f"input={clip}", f"output={out}"])
            frames = sum(1 for _ in av.open(str(out)).decode(video=0)) if out.exists() else 0
            rows.append(
                (f"video {secs} s, 640x480 at 25 fps, damaged middle", r, f"{frames} of {secs * 25} frames")
            )

    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"command: python benchmarks/bench_load.py {' '.join(sys.argv[1:])}".rstrip())
    print("| input | exit | wall s | max RSS MB | output | messages |")
    print("|---|---:|---:|---:|---|---|")
    for name, r, result in rows:
        messages = "; ".join(m[:90] for m in r["messages"][:2])
        print(f"| {name} | {r['status']} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | {result} | {messages} |")


if __name__ == "__main__":
    main()

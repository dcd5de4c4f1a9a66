#!/usr/bin/env bash
# The GPU measurements in one command that ends within 10 minutes on one H100/H200, for a lent GPU
# machine with no internet. Two suites, one per session (each fills most of a session's device time):
#
#   bash benchmarks/gpu_suite.sh prepare          # speed (issue 17): fills .gpu/ (git-ignored), ~43 MB
#   bash benchmarks/gpu_suite.sh run              # there, with .gpu/ carried: tables to $OUT or ./gpu_suite/
#   bash benchmarks/gpu_suite.sh prepare-quality  # quality (issue 11): fills .gpu_quality/, ~57 MiB (PyAV included)
#   bash benchmarks/gpu_suite.sh quality          # there, with .gpu_quality/ carried
#   bash benchmarks/gpu_suite.sh session          # one session's single command, with .gpu_quality/ carried:
#                                                 # the CUDA tests, the stylizer vs plain, Gatys, then a shorter
#                                                 # quality run (SESSION_TRAIN_SECONDS, default 220) and its speed
#   bash benchmarks/gpu_suite.sh run --smoke      # (or quality/session --smoke) the same steps, tiny, on any device
#
# .gpu/ holds the wheels the GPU image lacks (PyAV, Hydra and its parser; see KINDS.md of the device
# tool), 100 of the shared training photos and one style image (../shared does not travel); its VGG
# is random, since the weights do not change the speed. .gpu_quality/ holds Hydra's wheels, the
# offline VGG16 in float16 (half the bytes; the loss runs it in float32), every shared training and
# validation photo and the paintings. Each step prints one Markdown table and the command behind it;
# a failing step is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GPU=$ROOT/.gpu
mode=${1:-run}
smoke=${2:-}

if [ "$mode" = prepare ]; then
    SHARED=${SHARED:-$ROOT/../shared}
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/photos"
    plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $plat -d "$GPU/whl" av==18.1.0 hydra-core==1.3.8 omegaconf==2.3.1 platformdirs || exit 1
    # antlr4-python3-runtime 4.9.3 (Hydra's parser) is published as a source archive only: build it.
    python3 -m pip wheel -q --no-deps -w "$GPU/whl" antlr4-python3-runtime==4.9.3 || exit 1
    find "$SHARED/data/photos/train" -maxdepth 1 -name '*.jpg' | sort | head -100 | xargs -I{} cp {} "$GPU/photos/"
    cp "$SHARED/data/styles/candy.jpg" "$GPU/style.jpg" || exit 1
    du -sh "$GPU"
    echo "carry .gpu; run: bash benchmarks/gpu_suite.sh run"
    exit 0
fi
if [ "$mode" = prepare-quality ]; then
    SHARED=${SHARED:-$ROOT/../shared}
    Q=$ROOT/.gpu_quality
    grep -qx '/.gpu_quality/' .git/info/exclude 2>/dev/null || echo '/.gpu_quality/' >>.git/info/exclude
    rm -rf "$Q" && mkdir -p "$Q/whl" "$Q/photos" "$Q/styles"
    plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $plat -d "$Q/whl" av==18.1.0 hydra-core==1.3.8 omegaconf==2.3.1 platformdirs || exit 1
    python3 -m pip wheel -q --no-deps -w "$Q/whl" antlr4-python3-runtime==4.9.3 || exit 1
    # The training photos at the size training reads them (shorter side 256, fastns.data.square_crop's
    # resampling), so that PyAV fits in the 64 MB that travel beside them.
    python3 - "$SHARED/data/photos/train" "$Q/photos/train" <<'PY' || exit 1
import sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in sorted(src.glob("*.jpg")):
    im = Image.open(f).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    if s < 1:
        im = im.resize((max(256, round(w * s)), max(256, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0)
    im.save(dst / f.name, quality=90)
PY
    # Validation and evaluation use the first 8 validation photos only (data.val_size, max_images).
    mkdir -p "$Q/photos/val"
    find "$SHARED/data/photos/val" -maxdepth 1 -name '*.jpg' | sort | head -8 | xargs -I{} cp {} "$Q/photos/val/"
    cp "$SHARED"/data/styles/*.jpg "$Q/styles/" || exit 1
    # The offline VGG16 up to conv4_3 (all the default loss reads: relu1_2 ... relu4_3), in float16.
    python3 - "$SHARED/weights/vgg16_hed_features.pth" "$Q/vgg16_fp16.pth" <<'PY' || exit 1
import sys, torch
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
keep = {k: v.half() for k, v in sd.items() if int(k.removeprefix("features.").split(".")[0]) <= 21}
torch.save(keep, sys.argv[2])
PY
    du -sh "$Q"
    echo "carry .gpu_quality; run: bash benchmarks/gpu_suite.sh quality"
    exit 0
fi
[ "$mode" = run ] || [ "$mode" = quality ] || [ "$mode" = session ] || {
    echo "usage: gpu_suite.sh prepare | run [--smoke] | prepare-quality | quality [--smoke] | session [--smoke]" >&2
    exit 2
}
[ "$mode" = run ] || GPU=$ROOT/.gpu_quality

export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
needs="import hydra, av"
if ls "$GPU"/whl/*.whl >/dev/null 2>&1 && ! python3 -c "$needs" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$GPU"/whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site || exit 1
fi
out=${OUT:-$ROOT/gpu_suite}
mkdir -p "$out/runs"
report=$out/gpu_suite.md
[ "$mode" = quality ] && report=$out/gpu_quality.md
[ "$mode" = session ] && report=$out/gpu_session.md
photos=$GPU/photos
style=$GPU/style.jpg
if [ -n "$smoke" ]; then  # tiny versions of every step, to check the script on any machine
    [ -d "$photos" ] || photos=$ROOT/../shared/data/photos/val
    [ -f "$style" ] || style=$ROOT/../shared/data/styles/candy.jpg
    device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
    stylize_args="--device $device --sizes 64 --networks half --repeats 1"
    train_steps=(12 4) train_size=64 train_extra="trainer.accelerator=$device data.num_workers=0 trainer.log_every_n_steps=1"
    gatys_args="--device $device --sizes 64 --repeats 1 --run-size 64 --run-iterations 5"
    step_args="--device $device --sizes 32 --steps 2"
else
    stylize_args="--device cuda --video 300"
    train_steps=(3000 750) train_size=256 train_extra="trainer=gpu data.num_workers=12"
    gatys_args="--device cuda --sizes 256 512 --repeats 5 --run-size 512 --run-iterations 500 --precisions fp32 bf16"
    step_args="--device cuda --sizes 256 --steps 50"
fi

step() {  # step TITLE COMMAND...: run, tee into the report, keep going on failure
    local title=$1
    shift
    printf '\n## %s\n\n```\n%s\n```\n\n' "$title" "$*" | tee -a "$report"
    local t0=$SECONDS
    "$@" 2>"$out/stderr.log" | tee -a "$report"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "**failed (exit $rc)**: $(tail -3 "$out/stderr.log" | tr '\n' ' ')" | tee -a "$report"; }
    echo "($((SECONDS - t0)) s)" | tee -a "$report"
}

# Steady-state steps/s of a run folder from its TensorBoard scalars' wall times, between 1/6 of
# the last logged step and that step (start-up, the first validation and cuDNN autotuning left out).
steady_rate() {  # steady_rate DIR NAME STEPS BATCH: one Markdown row
    python3 - "$@" <<'PY'
import glob, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
d, name, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ev = EventAccumulator(glob.glob(f"{d}/tensorboard/**/events.*", recursive=True)[0], size_guidance={"scalars": 0})
ev.Reload()
pts = ev.Scalars("train/loss/total")
b = pts[-1]; a = min(pts, key=lambda e: abs(e.step - b.step // 6))
if b.step <= a.step:
    sys.exit(f"{name}: too few logged steps to time ({[p.step for p in pts]})")
rate = (b.step - a.step) / (b.wall_time - a.wall_time)
print(f"| {name} | {batch} | {b.step} | {rate:.1f} | {rate * batch:.0f} | {40000 / rate / 60:.1f} min |")
PY
}

# End-to-end training on synthetic-speed settings (random VGG, no validation or checkpoints).
train_rate() {  # train_rate NAME STEPS BATCH OVERRIDES...
    local name=$1 steps=$2 batch=$3
    shift 3
    local dir=$out/runs/$name
    rm -rf "$dir"
    python3 scripts/train.py style.image="$style" data.root="$photos" loss.vgg.weights=random \
        data.image_size=$train_size data.batch_size="$batch" trainer.max_steps="$steps" \
        trainer.val_check_interval=1000000 checkpoint_every=1000000 $train_extra "$@" \
        hydra.run.dir="$dir" >"$dir.log" 2>&1 || { tail -3 "$dir.log"; return 1; }
    steady_rate "$dir" "$name" "$steps" "$batch"
}

header() {  # header TITLE: the machine, torch and the commit, at the top of the report
    {
        echo "# $1, $(date -u +%FT%H:%MZ)"
        echo
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
        python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
        git log -1 --format='commit %h %s' 2>/dev/null
    } | tee "$report"
}

# Issue 11 on a GPU: the recipe without experiment=cpu (256 px, batch 4, style at 512 px, bf16)
# for STEPS steps on the shared photos, a checkpoint every quarter of the run, each evaluated at
# 256 px against Gatys from noise (the evaluation of docs/quality.md, at the paper's size), the
# last first. The training gets at most SECONDS (then it is interrupted and saves last.ckpt);
# checkpoints written by then are still evaluated. Also the run's steady-state steps/s end to end
# (data loading, validation, checkpoints included). QUALITY_EXTRA: more overrides for the training
# command, e.g. QUALITY_EXTRA=optimizer=muon (the CPU recipe's optimiser, not yet measured on a GPU).
quality_run() {  # quality_run PAINTING STEPS SECONDS
    local painting=$1 steps=$2 seconds=$3
    local size=256 its=200 extra="trainer=gpu data.num_workers=12"
    local Q=$GPU vgg=$GPU/vgg16_fp16.pth
    if [ -n "$smoke" ]; then
        [ -d "$Q/photos" ] || Q=$ROOT/../shared/data
        [ -f "$vgg" ] || vgg=$ROOT/../shared/weights/vgg16_hed_features.pth
        local device
        device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
        steps=8 size=32 its=3 extra="trainer.accelerator=$device data.num_workers=0 data.image_size=32 style.size=64 border=8 trainer.log_every_n_steps=1"
    fi
    local dir=$out/runs/quality_$painting
    rm -rf "$dir"
    local cmd=(python3 scripts/train.py style.image="$Q/styles/$painting.jpg" data.root="$Q/photos/train"
        data.val_root="$Q/photos/val" loss.vgg.weights="$vgg" trainer.max_steps="$steps"
        checkpoint_every=$((steps / 4)) $extra ${QUALITY_EXTRA:-} hydra.run.dir="$dir")
    printf '\n## Quality run: training (%s)\n\n```\n%s\n```\n\n' "$painting" "${cmd[*]}" | tee -a "$report"
    local t0=$SECONDS
    timeout --signal=INT "$seconds" "${cmd[@]}" >"$dir.log" 2>&1
    local rc=$?
    echo "exit $rc, $((SECONDS - t0)) s; $(grep -c . "$dir.log") log lines" | tee -a "$report"
    {
        printf '\n| run | batch | last step | steps/s (steady) | images/s | 40k steps would take |\n'
        echo "|---|---:|---:|---:|---:|---:|"
    } | tee -a "$report"
    steady_rate "$dir" "quality_$painting" "$steps" 4 2>&1 | tee -a "$report"
    printf '\n## Evaluation at %s px (8 validation photos, %s L-BFGS iterations from noise)\n\n' "$size" "$its" | tee -a "$report"
    echo "| checkpoint | ≈ Gatys from noise (median) | total | content | style | 4x4 pattern |" | tee -a "$report"
    echo "|---|---:|---:|---:|---:|---:|" | tee -a "$report"
    local ckpt name
    local last=$dir/checkpoints/last.ckpt
    [ "$rc" = 0 ] && last=  # a finished run's last.ckpt is its final step_*.ckpt
    for ckpt in $last $(ls -r "$dir"/checkpoints/step_*.ckpt 2>/dev/null); do
        [ -f "$ckpt" ] || continue
        name=$(basename "$ckpt" .ckpt)
        python3 scripts/export.py model="$ckpt" output="$dir/$name.safetensors" >>"$dir.export.log" 2>&1 || {
            echo "| $name | export failed | | | | |" | tee -a "$report"; continue; }
        python3 scripts/evaluate.py model="$dir/$name.safetensors" images="$Q/photos/val" output="$dir/report_$name" \
            image_size="$size" max_images=8 gatys_iterations="$its" "gatys_init=[noise]" loss.vgg.weights="$vgg" \
            style.image="$Q/styles/$painting.jpg" progress=false >>"$dir.eval.log" 2>&1 || {
            echo "| $name | evaluation failed | | | | |" | tee -a "$report"; continue; }
        python3 - "$dir/report_$name/metrics.json" "$name" "$ckpt" <<'PY' | tee -a "$report"
import json, sys
import torch
a = json.load(open(sys.argv[1]))["aggregate"]
loss, grid = a["network_loss"], a["grid"]["network"]
it = a["equivalent_iterations"]["noise"]
its = f"{it['median']}" + ("" if it["reached"] == it["images"] else f" ({it['reached']}/{it['images']} reached)")
step = torch.load(sys.argv[3], map_location="cpu", weights_only=True).get("global_step", "?")
print(f"| {sys.argv[2]} (step {step}) | {its} | {loss['total']['median']:.3f} | {loss['content']['median']:.3f} "
      f"| {loss['style']['median']:.3f} | {grid['mean']:.2f} |")
PY
    done
}

if [ "$mode" = quality ]; then
    painting=${QUALITY_STYLE:-mosaic}
    header "fastns GPU quality run ($painting)"
    quality_run "$painting" "${QUALITY_STEPS:-10000}" "${QUALITY_SECONDS:-420}"
    echo "report: $report"
    exit 0
fi

if [ "$mode" = session ]; then
    # One lent session's single command, ~9 minutes: what changed since the last GPU measurement
    # (CUDA graphs in the stylizer), Gatys, then a shorter quality run that also times training.
    header "fastns GPU session"
    step "CUDA tests" python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py
    if [ -n "$smoke" ]; then
        step "Stylizer" python3 benchmarks/bench_stylize.py $stylize_args --variants opt eager
        step "Gatys" python3 benchmarks/bench_gatys.py $gatys_args
    else
        step "Stylizer: default path (CUDA graphs) and eager vs plain (goal: >= plain everywhere; 1080p video >= 60 fps)" \
            timeout 180 python3 benchmarks/bench_stylize.py --device cuda --variants opt eager --batches 1 4 --video 300
        step "Gatys: one iteration vs the plain reference; 500 iterations at 512 px" \
            timeout 80 python3 benchmarks/bench_gatys.py --device cuda --sizes 512 --repeats 3 \
            --run-size 512 --run-iterations 500 --precisions fp32 bf16
    fi
    quality_run "${QUALITY_STYLE:-mosaic}" "${QUALITY_STEPS:-6000}" "${SESSION_TRAIN_SECONDS:-220}"
    echo "report: $report"
    exit 0
fi

header "fastns GPU suite"

# Goal 2: the default stylizer path against plain eager at every size, and 1080p video end to end.
step "Stylizer: default path vs plain (goal: >= plain everywhere; 1080p video >= 60 fps eager)" \
    python3 benchmarks/bench_stylize.py $stylize_args
# Goal 3: the step benchmark, then training end to end.
step "Training step vs the reference step (bf16)" \
    python3 benchmarks/bench_train.py $step_args --precision bf16-mixed
{
    printf '\n## Training end to end (goal: 40k steps at 256 px, batch 4, < 15 min)\n\n'
    echo "| run | batch | steps | steps/s (steady) | images/s | 40k steps would take |"
    echo "|---|---:|---:|---:|---:|---:|"
} | tee -a "$report"
train_rate bf16_b4 "${train_steps[0]}" 4 | tee -a "$report"
train_rate bf16_b16 "${train_steps[1]}" 16 | tee -a "$report"
# Issue 12: a network of four styles (per-photo style draws, one VGG call per style in a batch),
# against bf16_b4 above; the one style image four times under four names, which times the same.
four="styles=[{image:$style,name:a},{image:$style,name:b},{image:$style,name:c},{image:$style,name:d}]"
train_rate four_styles_b4 "${train_steps[1]}" 4 "$four" | tee -a "$report"
# torch.compile takes minutes on a CPU: the smoke run leaves it out.
[ -n "$smoke" ] || train_rate bf16_b4_compile "${train_steps[0]}" 4 compile=true | tee -a "$report"
# Goal 4: Gatys iterations against the plain reference, and 500 iterations at 512 px timed.
step "Gatys: one iteration vs the plain reference; whole runs" python3 benchmarks/bench_gatys.py $gatys_args
echo "report: $report"

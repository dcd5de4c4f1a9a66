#!/usr/bin/env bash
# The GPU measurements of the speed goals (docs: benchmarks/README.md, README_stylize.md) in one
# command that ends within 10 minutes on one H100/H200, for a lent GPU machine with no internet.
#
#   bash benchmarks/gpu_suite.sh prepare        # here, with pip access: fills .gpu/ (git-ignored)
#   bash benchmarks/gpu_suite.sh run            # there, with .gpu/ carried: tables to $OUT or ./gpu_suite/
#   bash benchmarks/gpu_suite.sh run --smoke    # the same steps, tiny, on whatever device (checks the script)
#
# .gpu/ holds the wheels the GPU image lacks (PyAV, Hydra and its parser; see KINDS.md of the device
# tool), 100 of the shared training photos and one style image (../shared does not travel). The VGG
# is random: its weights do not change the speed. Each step prints one Markdown table and the
# command behind it; a failing step is reported and the others still run.
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
[ "$mode" = run ] || { echo "usage: gpu_suite.sh prepare | run [--smoke]" >&2; exit 2; }

export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if ls "$GPU"/whl/*.whl >/dev/null 2>&1 && ! python3 -c "import hydra, av" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$GPU"/whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site || exit 1
fi
out=${OUT:-$ROOT/gpu_suite}
mkdir -p "$out/runs"
report=$out/gpu_suite.md
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

# End-to-end training: steady-state steps/s from the TensorBoard scalars' wall times, between 1/6
# of the run and its end (start-up, the first validation and cuDNN autotuning left out).
train_rate() {  # train_rate NAME STEPS BATCH OVERRIDES...
    local name=$1 steps=$2 batch=$3
    shift 3
    local dir=$out/runs/$name
    rm -rf "$dir"
    python3 scripts/train.py style.image="$style" data.root="$photos" loss.vgg.weights=random \
        data.image_size=$train_size data.batch_size="$batch" trainer.max_steps="$steps" \
        trainer.val_check_interval=1000000 checkpoint_every=1000000 $train_extra "$@" \
        hydra.run.dir="$dir" >"$dir.log" 2>&1 || { tail -3 "$dir.log"; return 1; }
    python3 - "$dir" "$name" "$steps" "$batch" <<'PY'
import glob, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
d, name, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ev = EventAccumulator(glob.glob(f"{d}/tensorboard/**/events.*", recursive=True)[0], size_guidance={"scalars": 0})
ev.Reload()
pts = ev.Scalars("train/loss/total")
a = min(pts, key=lambda e: abs(e.step - steps // 6)); b = pts[-1]
if b.step <= a.step:
    sys.exit(f"{name}: too few logged steps to time ({[p.step for p in pts]})")
rate = (b.step - a.step) / (b.wall_time - a.wall_time)
print(f"| {name} | {batch} | {steps} | {rate:.1f} | {rate * batch:.0f} | {40000 / rate / 60:.1f} min |")
PY
}

{
    echo "# fastns GPU suite, $(date -u +%FT%H:%MZ)"
    echo
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
    git log -1 --format='commit %h %s' 2>/dev/null
} | tee "$report"

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
# torch.compile takes minutes on a CPU: the smoke run leaves it out.
[ -n "$smoke" ] || train_rate bf16_b4_compile "${train_steps[0]}" 4 compile=true | tee -a "$report"
# Goal 4: Gatys iterations against the plain reference, and 500 iterations at 512 px timed.
step "Gatys: one iteration vs the plain reference; whole runs" python3 benchmarks/bench_gatys.py $gatys_args
echo "report: $report"

#!/usr/bin/env bash
# bench/gpu_check.sh: camfx's checks on a lent GPU machine, as one command.
#
#   bash bench/gpu_check.sh [OUTDIR]            on the GPU machine (wheels from .whl/)
#   bash bench/gpu_check.sh --dry-run [OUTDIR]  the same parts here on the CPU, tiny and short
#   bash bench/gpu_check.sh --fetch-wheels      here: fill .whl/ for the GPU machine
#
# Parts, each under its own `timeout`, a failure not stopping the next:
#   install    the carried wheels and camfx itself into $SITE (PYTHONPATH); dry run: only says what
#   env        nvidia-smi, versions (env.json), every needed module imported
#   doctor     python3 -m camfx doctor
#   runtimes   camfx bench runtimes --sessions 4 (720p and 1080p, device pipeline vs OpenCV)
#   webrtc     camfx serve --device cuda and 20 s of bench latency against it, /healthz before and after
#   diffusion  camfx bench diffusion --random-weights --steps 1 --compile, StreamDiffusion in the same run
#   sessions   camfx bench diffusion --random-weights --sessions 1,2,4,8: the diffusion scheduler against one
#              FIFO executor on the real CUDA networks (sd-turbo's shapes, random weights), the simulated
#              device beside it, and the batch-scaling curve that calibrates the simulated one
# (webrtc and sessions run before diffusion: the UNet's compile is the slowest part, so it gets what is left.)
# OUTDIR (default $GPU_CHECK_OUT, else bench/results/gpu_check) gets every JSON and PNG, a log per
# part, summary.txt and summary.json. When $OUT is set (the device tool sets it) OUTDIR is packed
# into $OUT/gpu_check.tar.gz after every part, so a run cut short still brings back what finished,
# and summary.txt is copied to $OUT/gpu_check-summary.txt. Exits 1 if any part failed or timed out.
#
# ---- How to run it on the device tool (nvidia-h200, no network there) -------------------------
# 1. Here, once per change of bench/gpu_wheels.txt (a list of NAME==VERSION with their sizes):
#        bash bench/gpu_check.sh --fetch-wheels
#    which is, for every line of the list,
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#          --platform manylinux1_x86_64 -d .whl NAME==VERSION
#    and then the camfx wheel (the fallback if camfx cannot be built from the tree there):
#        python3 -m pip wheel --no-deps --no-build-isolation --no-index -w .whl DIR
#    DIR being a fresh copy of pyproject.toml README.md LICENSE engine models export demo bench,
#    so that no build/ is left in the tree and no stale build/lib file gets into the wheel.
#    /.whl/ is ignored (.gitignore and .git/info/exclude). About 51 MiB of wheels (av alone 34 MiB)
#    plus the ~2 MB tree: under the 64 MiB a call carries.
# 2. The call (its output_tail ends with the summary table):
#        run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
#    The parts share GPU_CHECK_TOTAL (default 540 s), so the script ends before the 600 s limit.
#    About a minute for the machine to start comes on top: a whole try costs ~11 of the 15 device
#    minutes; give_back at once after it, or rerun one part with GPU_CHECK_PARTS="install diffusion".
# 3. What comes back: $OUT/gpu_check.tar.gz (OUTDIR: env.json, doctor.log, runtimes.json,
#    latency.json + latency.png, healthz-before.json, healthz-after.json, diffusion.json, diffusion-sessions.json,
#    nvidia-smi.txt, pip-list.txt, a log per part, summary.txt, summary.json) and
#    $OUT/gpu_check-summary.txt. Unpack with: tar -xzf gpu_check.tar.gz
#
# Knobs (environment): PYTHON (python3; a dry run prefers .venv/bin/python), SITE (/tmp/site),
# GPU_CHECK_TOTAL (seconds for all parts), GPU_CHECK_PARTS (which parts, in order),
# LATENCY_SECONDS (20 on the GPU, 3 in a dry run), SERVE_DEVICE (camfx serve --device: cuda on
# the GPU, cpu in a dry run), DIFFUSION_COMPILE (1: --compile; a dry run
# sets TORCH_COMPILE_DISABLE=1 so the compiled rows exist without minutes of CPU inductor).

set -u
cd "$(dirname "$0")/.."  # the repo root: .whl/ and the tree camfx is built from
ROOT=$(pwd)

MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry; shift ;;
  --fetch-wheels) MODE=fetch; shift ;;
  -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
esac

WHEEL_LIST=bench/gpu_wheels.txt
wheel_specs() {  # the NAME==VERSION lines of the list, comments and blanks dropped
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$WHEEL_LIST" | grep -v '^$'
}
camfx_source() {  # a fresh copy of what building camfx reads: the tree stays untouched (no build/)
  local dir                 # and no stale build/lib files end up in the wheel
  dir=$(mktemp -d) || return 1
  tar -cf - --exclude=__pycache__ pyproject.toml README.md LICENSE engine models export demo bench | tar -xf - -C "$dir"
  echo "$dir"
}

if [ "$MODE" = fetch ]; then
  PY=${PYTHON:-python3}
  [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
  mkdir -p .whl && rm -f .whl/*.whl  # one version of each, or the install there stops
  wheel_specs | xargs "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl || exit 1
  src=$(camfx_source) || exit 1
  "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w .whl "$src" || exit 1
  rm -rf "$src"
  ls -l .whl/*.whl | awk '{printf "%10d  %s\n", $5, $9}'
  wheels=$(cat .whl/*.whl | wc -c)
  tree=$(git ls-files -co --exclude-standard -z | xargs -0 cat 2>/dev/null | wc -c)
  echo "wheels $wheels bytes + tree $tree bytes = $((wheels + tree)) of 67108864 (64 MiB) a call carries"
  [ $((wheels + tree)) -lt 67108864 ] || { echo "too big to carry"; exit 1; }
  exit 0
fi

OUTDIR=${1:-${GPU_CHECK_OUT:-bench/results/gpu_check}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
(cd "$OUTDIR" && rm -f summary.txt summary.json env.json runtimes.json latency.json latency.png diffusion.json \
  healthz-before.json healthz-after.json nvidia-smi.txt pip-list.txt server.log ./*.log)  # nothing stale from a last run

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg  # logs as they happen; no hub lookups (no network)
export MODE OUTDIR ROOT
export SITE=${SITE:-/tmp/site}
if [ "$MODE" = dry ]; then
  PY=${PYTHON:-python3}
  [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=$ROOT/.venv/bin/python
  TOTAL=${GPU_CHECK_TOTAL:-300}
  export LATENCY_SECONDS=${LATENCY_SECONDS:-3}
  export TORCH_COMPILE_DISABLE=1  # --compile's code path without inductor's minutes on a CPU
else
  PY=${PYTHON:-python3}
  TOTAL=${GPU_CHECK_TOTAL:-540}
  export LATENCY_SECONDS=${LATENCY_SECONDS:-20}
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}  # the --target install is seen by every part
fi
export PY DIFFUSION_COMPILE=${DIFFUSION_COMPILE:-1}
PARTS=${GPU_CHECK_PARTS:-install env doctor runtimes webrtc sessions diffusion}

# ---- the parts: each a function run in its own bash under `timeout` ---------------------------

part_install() {
  if [ "$MODE" = dry ]; then  # this environment is used as it is; say what a GPU run installs
    echo "dry run: nothing installed; on the GPU machine this installs into $SITE:"
    if ls .whl/*.whl >/dev/null 2>&1; then ls -l .whl/*.whl | awk '{printf "  %10d  %s\n", $5, $9}'
    else echo "  (no .whl/ here; bash bench/gpu_check.sh --fetch-wheels fills it with:)"; sed 's/^/  /' <(wheel_specs); fi
    echo "  and camfx from this tree (pip install --no-deps --no-build-isolation --target $SITE .)"
    wheel_specs | grep -qv '==' && { echo "a line of $WHEEL_LIST is not NAME==VERSION"; return 1; }
    return 0
  fi
  local wheels
  wheels=$(ls .whl/*.whl 2>/dev/null | grep -v '/camfx-')
  [ -n "$wheels" ] || { echo "no wheels in .whl/: carry it (run(..., carry=[\".whl\"]))"; return 1; }
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels || return 1
  # camfx from the tree that travelled, so the check runs this very code; the carried wheel if
  # the image's setuptools cannot build it (the SPDX licence string needs setuptools >= 77).
  local src
  src=$(camfx_source) || return 1
  if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$src"; then
    echo "building camfx here failed; installing the carried wheel instead (it may be older than the tree)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/camfx-*.whl || return 1
  fi
  ls "$SITE"
}

part_env() {
  if command -v nvidia-smi >/dev/null; then nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1; cat "$OUTDIR/nvidia-smi.txt"
  else echo "no nvidia-smi here" | tee "$OUTDIR/nvidia-smi.txt"; fi
  { "$PY" -m pip list 2>/dev/null; [ "$MODE" = gpu ] && { echo "--- in $SITE:"; "$PY" -m pip list --path "$SITE" 2>/dev/null; }; } \
    > "$OUTDIR/pip-list.txt"
  # Everything the later parts import, each from where: a missing one fails here, by name.
  "$PY" - "$OUTDIR/env.json" <<'EOF'
import importlib, json, sys
found, missing = {}, []
for name in ("camfx", "aiortc", "av", "pydantic", "cryptography", "onnxruntime", "cv2", "numba", "torch",
             "onnx", "diffusers", "transformers", "streamdiffusion", "matplotlib", "psutil"):
    try:
        module = importlib.import_module(name)
        found[name] = {"version": getattr(module, "__version__", None), "file": getattr(module, "__file__", None)}
    except Exception as exc:  # not only ImportError: a broken binary raises others
        missing.append(f"{name}: {type(exc).__name__}: {exc}")
info = {"python": sys.version, "modules": found, "missing": missing}
if "torch" in found:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = list(torch.cuda.get_device_capability())
if "onnxruntime" in found:
    import onnxruntime
    info["onnxruntime_providers"] = onnxruntime.get_available_providers()
if "camfx" in found:
    from camfx.bench.stats import machine
    info["machine"] = machine()
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
sys.exit(1 if missing else 0)
EOF
}

part_doctor() {
  "$PY" -m camfx doctor
}

part_runtimes() {
  if [ "$MODE" = dry ]; then  # one small size, one model, few frames; the device pipeline on the CPU
    "$PY" -m camfx bench runtimes --sizes 320x180 --models landscape --frames 10 --sessions 2 \
      --device-pipeline cpu --out "$OUTDIR"
  else
    "$PY" -m camfx bench runtimes --sessions 4 --device-pipeline cuda --out "$OUTDIR"
  fi
}

part_webrtc() {
  local device=cuda size=1280x720 port log=$OUTDIR/server.log
  [ "$MODE" = dry ] && device=cpu size=320x240
  device=${SERVE_DEVICE:-$device}
  port=$("$PY" -c "from camfx.bench.latency import free_port; print(free_port())") || return 1
  "$PY" -m camfx serve --device "$device" --host 127.0.0.1 --port "$port" --log-level INFO > "$log" 2>&1 &
  SERVER=$!  # global: the EXIT trap runs after this function's locals are gone
  trap stop_server EXIT  # the server goes with this part, however it ends
  stop_server() {  # TERM (camfx shuts down cleanly on it), KILL if it is still there 15 s later
    kill "$SERVER" 2>/dev/null || return 0
    local i; for i in $(seq 1 60); do kill -0 "$SERVER" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$SERVER" 2>/dev/null
  }
  local server=$SERVER
  healthz() {  # GET /healthz into $1, retrying while the server starts (models and CUDA load first)
    "$PY" - "http://127.0.0.1:$port/healthz" "$1" "$server" <<'EOF'
import json, os, sys, time, urllib.request
url, path, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(600):
    try:
        data = json.load(urllib.request.urlopen(url, timeout=5))
        json.dump(data, open(path, "w"), indent=2)
        print(json.dumps(data))
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"the server exited before answering {url}")
        time.sleep(0.25)
sys.exit(f"{url} did not answer")
EOF
  }
  healthz "$OUTDIR/healthz-before.json" || { tail -20 "$log"; return 1; }
  "$PY" -m camfx bench latency --url "http://127.0.0.1:$port" --sizes "$size" --codecs VP8 --effects blur \
    --seconds "$LATENCY_SECONDS" --warmup "$([ "$MODE" = dry ] && echo 1 || echo 3)" --no-whip --out "$OUTDIR"
  local rc=$?
  healthz "$OUTDIR/healthz-after.json" || rc=1
  stop_server
  echo "server stopped; its log: $log"
  return $rc
}

part_diffusion() {
  local compile=()
  [ "$DIFFUSION_COMPILE" = 1 ] && compile=(--compile)
  if [ "$MODE" = dry ]; then  # tiny random models in hub layout, made here in seconds
    TINY=$(mktemp -d) || return 1  # global, for the EXIT trap
    trap 'rm -rf "$TINY"' EXIT
    local tiny=$TINY
    "$PY" -m camfx.bench.tiny_models "$tiny" || return 1
    "$PY" -m camfx bench diffusion --model "$tiny/sd-tiny" --taesd "$tiny/taesd-tiny" --size 64 --steps 1 \
      --frames 2 --warmup 1 --flicker-frames 3 --device cpu ${compile[@]+"${compile[@]}"} --out "$OUTDIR"
  else  # full-size sd-turbo architecture, untrained; warm-up covers compile and graph capture
    "$PY" -m camfx bench diffusion --random-weights --steps 1 --frames 10 --warmup 3 ${compile[@]+"${compile[@]}"} \
      --out "$OUTDIR"
  fi
}

part_sessions() {
  if [ "$MODE" = dry ]; then
    local tiny
    tiny=$(mktemp -d) || return 1
    "$PY" -m camfx.bench.tiny_models "$tiny" || { rm -rf "$tiny"; return 1; }
    "$PY" -m camfx bench diffusion --model "$tiny/sd-tiny" --taesd "$tiny/taesd-tiny" --size 64 --sessions 1,2 \
      --seconds 1 --frames 1 --warmup 0 --device cpu --out "$OUTDIR"
    local rc=$?
    rm -rf "$tiny"
    return $rc
  fi
  "$PY" -m camfx bench diffusion --random-weights --size 512 --steps 1 --sessions 1,2,4,8 --seconds 5 \
    --frames 5 --warmup 2 --out "$OUTDIR"
}

export -f wheel_specs camfx_source part_install part_env part_doctor part_runtimes part_webrtc part_diffusion part_sessions
export WHEEL_LIST

# ---- running them --------------------------------------------------------------------------

declare -A LIMIT=([install]=90 [env]=60 [doctor]=60 [runtimes]=150 [webrtc]=90 [diffusion]=300 [sessions]=150)
[ "$MODE" = dry ] && LIMIT=([install]=30 [env]=60 [doctor]=60 [runtimes]=90 [webrtc]=60 [diffusion]=120 [sessions]=120)
START=$(date +%s)
RESULTS=()  # "name status seconds rc"

pack() {  # OUTDIR into $OUT, after every part: a run killed at its limit still returns the rest
  [ -n "${OUT:-}" ] || return 0
  tar -czf "$OUT/gpu_check.tar.gz.tmp" -C "$(dirname "$OUTDIR")" "$(basename "$OUTDIR")" &&
    mv "$OUT/gpu_check.tar.gz.tmp" "$OUT/gpu_check.tar.gz"
  [ -f "$OUTDIR/summary.txt" ] && cp "$OUTDIR/summary.txt" "$OUT/gpu_check-summary.txt"
  return 0
}

summary() {
  {
    echo "gpu_check ($MODE) $(date -u +%FT%TZ), $(( $(date +%s) - START )) s in all"
    local r; for r in "${RESULTS[@]}"; do printf '  %-10s %-10s %5s s  (rc %s)\n' $r; done
  } > "$OUTDIR/summary.txt"
  { # the same as JSON, for tests and scripts
    printf '{"mode": "%s", "parts": [' "$MODE"
    local first=1 name status seconds rc
    for r in "${RESULTS[@]}"; do
      read -r name status seconds rc <<< "$r"
      [ "$rc" = - ] && rc=null  # a part skipped for want of time never ran
      [ $first = 1 ] || printf ', '; first=0
      printf '{"name": "%s", "status": "%s", "seconds": %s, "rc": %s}' "$name" "$status" "$seconds" "$rc"
    done
    printf ']}\n'
  } > "$OUTDIR/summary.json"
}

echo "gpu_check: $MODE run of [$PARTS] into $OUTDIR with $PY, $TOTAL s for all parts"
for name in $PARTS; do
  left=$(( TOTAL - ($(date +%s) - START) ))
  limit=${LIMIT[$name]:-60}
  [ "$limit" -gt $(( left - 5 )) ] && limit=$(( left - 5 ))  # never past the whole run's budget
  echo "=== $name (at most $limit s) $(date -u +%T)"
  if [ "$limit" -lt 5 ]; then
    RESULTS+=("$name skipped 0 -"); echo "no time left"; continue
  fi
  t0=$(date +%s)
  # -k: a part that ignores TERM is killed 10 s later. timeout signals the part's whole process
  # group, so a server it started goes too.
  timeout -k 10 "$limit" bash -c "part_$name" > "$OUTDIR/$name.log" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=passed ;;
    124|137) status=timed-out ;;
    *) status=failed ;;
  esac
  RESULTS+=("$name $status $seconds $rc")
  # the end of its log, so the device tool's output_tail shows the figures or the error
  tail -n "$([ $status = passed ] && echo 12 || echo 40)" "$OUTDIR/$name.log" | cut -c1-300
  echo "--- $name: $status in $seconds s"
  summary
  pack
done

summary
pack
echo
cat "$OUTDIR/summary.txt"
[ -n "${OUT:-}" ] && echo "packed into $OUT/gpu_check.tar.gz"
# any part not passed (failed, timed out, skipped) fails the run
! grep -Eq ' (failed|timed-out|skipped) ' "$OUTDIR/summary.txt"

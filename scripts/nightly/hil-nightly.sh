#!/usr/bin/env bash
# Nightly HIL regression: run the suite, compare with the reference run, keep the history, prune old runs.
#
#   scripts/nightly/hil-nightly.sh                        # the emulated target (qemu), e.g. in CI
#   HIL_TARGET=esp32s3 HIL_BENCH=fixtures/benches/esp32s3-n6705c.yaml scripts/nightly/hil-nightly.sh   # a bench PC
#
# Environment (all optional):
#   HIL_TARGET   host | qemu | esp32s3 (default qemu)
#   HIL_BENCH    bench file: port, baud, firmware build, power analyzer (needed for esp32s3)
#   HIL_MODEL    model directory (default: the project's default model)
#   HIL_REPORTS  where runs are kept (default reports/ in the checkout); keep it on a disk that survives
#   HIL_KEEP     runs to keep when pruning (default 60; the reference and the latest are never pruned)
#   HIL_PULL     1: `git pull --ff-only` first (a bench PC that follows a branch)
#
# Exit status: 0 no regression; 1 a test failed or a metric regressed against the reference; 2 usage; 3 the
# device or an instrument could not be brought up. The first run on a machine has no reference: it becomes one.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${HIL_TARGET:-qemu}
reports=${HIL_REPORTS:-reports}
keep=${HIL_KEEP:-60}
log() { printf '[nightly %s] %s\n' "$(date -u +%H:%M:%SZ)" "$*" >&2; }

if [ "${HIL_PULL:-0}" = 1 ]; then
    log "git pull --ff-only"
    git pull --ff-only
fi
scripts/setup.sh                       # installs what is missing, rebuilds the emulated firmware when sources changed

args=(--target "$target" --report-dir "$reports")
[ -n "${HIL_BENCH:-}" ] && args+=(--bench "$HIL_BENCH")
[ -n "${HIL_MODEL:-}" ] && args+=(--model "$HIL_MODEL")
if [ -e "$reports/reference" ]; then
    args+=(--against reference)
else
    log "no reference run yet under $reports: tonight's run becomes the reference if it passes"
fi

set +e
.venv/bin/hil run "${args[@]}"
status=$?
set -e

if [ ! -e "$reports/reference" ] && [ $status -eq 0 ]; then
    .venv/bin/hil runs --report-dir "$reports" --mark-reference latest
fi
.venv/bin/hil runs --report-dir "$reports" --prune --keep "$keep" >/dev/null
.venv/bin/hil history --report-dir "$reports" --target "$target" --last 7 || true
log "run: $(readlink -f "$reports/latest" 2>/dev/null || echo none); exit $status"
exit $status

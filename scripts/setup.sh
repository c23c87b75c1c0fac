#!/usr/bin/env bash
# Installs what is missing, and nothing else: system packages (apt), the virtual environment at .venv with the
# pinned Python packages and the `hil` command, and the firmware builds for the emulated targets.
# Quick when everything is already there: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-misc gcc-xtensa-lx106 binutils-xtensa-lx106 picolibc-xtensa-lx106-elf gcc make
              chromium chromium-driver clang libclang-rt-14-dev)
PICOLIBC_SPECS=/usr/lib/xtensa-lx106-elf/picolibc.specs

say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v qemu-system-xtensa >/dev/null || need_apt+=(qemu-system-misc)
command -v xtensa-lx106-elf-gcc >/dev/null || need_apt+=(gcc-xtensa-lx106 binutils-xtensa-lx106)
[ -f "$PICOLIBC_SPECS" ] || need_apt+=(picolibc-xtensa-lx106-elf)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
command -v chromium >/dev/null || need_apt+=(chromium)  # the run page's browser test (tests/test_report_page.py)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v clang >/dev/null || need_apt+=(clang)  # the fuzz targets (scripts/fuzz.py, tests/test_fuzz.py)
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a' >/dev/null || need_apt+=(libclang-rt-14-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing system packages: ${need_apt[*]}"
        say "run as root, or install them: sudo apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
        exit 1
    fi
    say "installing system packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The venv is rebuilt only when the pinned requirements or the project metadata change.
stamp_src=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
stamp_file=.venv/.hil-setup-stamp
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp_src" ]; then
    say "creating the virtual environment .venv (pinned: requirements.lock)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
    echo "$stamp_src" > "$stamp_file"
fi

# Firmware for the emulated targets; a no-op when the sources have not changed.
.venv/bin/hil build --target host --target qemu --quiet

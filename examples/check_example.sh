#!/usr/bin/env bash
# Proves that vlmshield-jpeg installs as a wheel into a clean environment and works there:
#   1. builds the wheels of vlmshield and of examples/vlmshield-jpeg (non-editable) and checks that the plugin's
#      wheel holds its packaged weights;
#   2. creates a fresh virtual environment, installs torch and torchvision (pinned as in the Makefile: they come
#      from this machine's disk), then the two wheels (their other dependencies from the package index);
#   3. runs the example's tests from a copy outside the source tree, against the installed plugin, and checks
#      that `vlmshield plugins` and `vlmshield list defenses` show it.
# Works from any directory. PYTHON picks the interpreter (python3 by default); KEEP=1 keeps the temporary folder.
set -euo pipefail

start=$SECONDS
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
example="$here/vlmshield-jpeg"
python="${PYTHON:-python3}"
torch_pins=(torch==2.14.1 torchvision==0.29.1)

work="$(mktemp -d "${TMPDIR:-/tmp}/vlmshield-jpeg-check.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    echo "keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - start)); }

# Build from copies of the two source trees: setuptools writes build/ and *.egg-info beside the sources, and a
# stale build/ can carry deleted files into a wheel; copies keep both the checkout and the wheels clean.
step "copying the sources"
copy_tree() {  # copy_tree SOURCE DESTINATION [PATH...]: the PATHs of SOURCE, without build outputs
    local source=$1 destination=$2
    shift 2
    mkdir -p "$destination"
    tar -C "$source" --exclude=build --exclude=dist --exclude='*.egg-info' --exclude=__pycache__ -cf - "$@" \
        | tar -C "$destination" -xf -
}
root_files=()
for file in "$root"/*; do
    [[ -f "$file" ]] && root_files+=("$(basename "$file")")
done
copy_tree "$root" "$work/sources/vlmshield" "${root_files[@]}" src
copy_tree "$example" "$work/sources/vlmshield-jpeg" .

step "building the wheels"
"$python" -m pip wheel --quiet --no-deps -w "$work/wheels" "$work/sources/vlmshield" "$work/sources/vlmshield-jpeg"
vlmshield_wheel=$(ls "$work"/wheels/vlmshield-*.whl)
plugin_wheel=$(ls "$work"/wheels/vlmshield_jpeg-*.whl)
ls -l "$work/wheels"
contents=$("$python" -m zipfile -l "$plugin_wheel")
for file in weights/jpeg-convnet-shapes.safetensors weights/jpeg-convnet-shapes.json; do
    if ! grep -q "vlmshield_jpeg/$file" <<<"$contents"; then
        echo "FAIL: $(basename "$plugin_wheel") does not hold vlmshield_jpeg/$file" >&2
        exit 1
    fi
done
echo "the plugin's wheel holds its weights and card"

step "creating a fresh environment"
pip_install() {  # pip install, without the warnings this machine's pip configuration prints about absent indexes
    "$venv_python" -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }
}
"$python" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
pip_install "${torch_pins[@]}"
pip_install "$vlmshield_wheel" "$plugin_wheel[test]"
"$venv_python" -m pip list 2>/dev/null | grep -iE '^(vlmshield|vlmshield-jpeg|torch|torchvision|pillow|pytest) '

# Only what the environment has: no checkout on the path, plugins loaded as installed, every plugin error fatal.
run() {
    env -u PYTHONPATH -u VLMSHIELD_LOAD_PLUGINS -u VLMSHIELD_DISABLE_PLUGINS VLMSHIELD_STRICT_PLUGINS=1 \
        HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$@"
}

step "running the example's tests against the installed plugin"
mkdir -p "$work/run"
cp -r "$example/tests" "$work/run/tests"
(cd "$work/run" && run "$venv_python" -m pytest -q -p no:cacheprovider tests)

step "the command line sees the plugin"
plugins=$(cd "$work/run" && run "$work/venv/bin/vlmshield" plugins)
if ! grep -A4 -E '^jpeg +\(vlmshield-jpeg ' <<<"$plugins"; then
    echo "FAIL: vlmshield plugins does not show vlmshield-jpeg:" >&2
    echo "$plugins" >&2
    exit 1
fi
defenses=$(cd "$work/run" && run "$work/venv/bin/vlmshield" list defenses)
echo "$defenses"
if ! grep -qE '^jpeg +\(test-time\)' <<<"$defenses"; then
    echo "FAIL: vlmshield list defenses does not list jpeg" >&2
    exit 1
fi

step "vlmshield-jpeg installs from its wheel and passes its tests in a clean environment"
echo "took $((SECONDS - start)) s"

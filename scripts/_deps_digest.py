"""Print a digest of pyproject.toml's dependency lists: scripts/lock writes it into the lockfiles and
scripts/bootstrap compares it, so a dependency added to pyproject.toml without `scripts/lock` fails clearly."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
wanted = {"dependencies": project.get("dependencies", []), "optional": project.get("optional-dependencies", {})}
print(hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest())

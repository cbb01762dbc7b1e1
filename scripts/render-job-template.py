"""Print the flow-run Job a Prefect work pool's base job template makes with its defaults.

    .venv/bin/python scripts/render-job-template.py k8s/prefect/base-job-template.json

What the Kubernetes worker would create for a flow run before it adds the run's own values
(name, labels, the flow-run command and Prefect's environment); scripts/checkov.sh checks it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from prefect.utilities.templating import apply_values


def main() -> None:
    """Render the template named on the command line to standard output, as YAML."""
    template = json.loads(Path(sys.argv[1]).read_text())
    defaults = {
        name: prop["default"]
        for name, prop in template["variables"]["properties"].items()
        if prop.get("default") is not None
    }
    defaults.setdefault("name", "flow-run-example")
    defaults.setdefault("command", "prefect flow-run execute")
    job = apply_values(template["job_configuration"]["job_manifest"], defaults)
    meta = job["metadata"]
    meta["name"] = meta.pop("generateName").rstrip("-")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = str(container["args"]).split()
    yaml.safe_dump(job, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()

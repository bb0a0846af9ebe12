"""`helm install` through the Helm Go library (helm-sdkpy), release records in memory.

Usage: HELM_DRIVER=memory python tests/helm_install.py KUBECONFIG NAMESPACE RELEASE CHART VALUES_JSON
Prints the rendered manifest; on failure prints Helm's error and exits 1. A separate process
because Go reads HELM_DRIVER from the environment the process started with.
"""

import asyncio
import json
import sys

from helm_sdkpy import Configuration, Install
from helm_sdkpy.exceptions import HelmError


def main(kubeconfig: str, namespace: str, release: str, chart: str, values: str) -> int:
    cfg = Configuration(namespace=namespace, kubeconfig=kubeconfig)
    try:
        result = asyncio.run(Install(cfg).run(release, chart, values=json.loads(values), wait=False, timeout=60))
    except HelmError as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        return 1
    sys.stdout.write(result["manifest"])
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""The Prefect entrypoint a deployment names: `flows/nightly.py:nightly`.

Thin on purpose: the flow, its tasks and runners live in `ensgan.orchestration`, installed with
the package; this file is not a package of its own.
"""

from ensgan.orchestration.flow import nightly, run, serve

__all__ = ["nightly", "run", "serve"]

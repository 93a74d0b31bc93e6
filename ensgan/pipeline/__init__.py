"""The pipeline's stages, one module each, every one a `run(params, layout, ...)` that reads
files, writes files and returns small JSON-ready metadata. Both drivers call these and nothing
else: dvc.yaml through the `ensgan` CLI, and the Prefect flow (ensgan/orchestration) as tasks.
"""

STAGES = ("prepare", "train", "stack", "evaluate", "generate", "publish")

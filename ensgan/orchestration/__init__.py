"""The Prefect side: the stages as tasks, the nightly flow, and the task runners."""

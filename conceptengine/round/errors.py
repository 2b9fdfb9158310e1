"""The one error a run raises for a mistake in its inputs."""


class RunError(RuntimeError):
    """Something about the run's inputs is wrong; the message says what to fix."""

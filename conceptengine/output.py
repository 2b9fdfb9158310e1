"""What the command line lets through besides its own display: third-party chatter stays quiet by default.

Ray (its token-auth notice, Ray Data's "progress bars disabled" and its concurrency advice for small inputs, its
C++ core's error-level notes about actor arguments), transformers (a weight-loading bar per checkpoint load, deprecation FutureWarnings) and
huggingface_hub (download bars) write to the terminal on their own. `--verbose` lets all of it through and
turns on the engine's INFO log; either way the engine's own warnings show, one line each.
"""

from __future__ import annotations

import logging
import os
import warnings

THIRD_PARTY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "transformers", "huggingface_hub", "torch")


def configure_output(verbose: bool) -> None:
    """Call once, before Ray starts (Ray's C++ core reads its log level from the environment then)."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Ray's import resets its logger to INFO: it is imported (by the runner's module) before quieting.
    import conceptengine.engine.runner  # noqa: F401

    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Ray Data's planner on a step whose input is one small block file: advice for tuning, not a problem.
    warnings.filterwarnings(
        "ignore", message="The (maximum|minimum) number of concurrent", category=UserWarning
    )
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()

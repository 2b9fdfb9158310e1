"""The root configuration: one Pydantic tree, loaded from YAML plus `--set a.b=c` overrides.

Every model forbids unknown keys, so a typo in a config fails fast with the key's dotted path instead
of being silently ignored for a whole run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from conceptengine.engine.stage import StageConfig
from conceptengine.model.proposal_settings import MaskProposalSettings
from conceptengine.ontology.np_proposal import NPProposalSettings
from conceptengine.review.settings import ReviewSettings
from conceptengine.verifiers.routing import RoutingConfig
from conceptengine.verifiers.settings import VerificationSettings


class ConfigError(ValueError):
    """A config the user wrote is wrong; the message names the key and what to fix."""


M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimWorldConfig(_Strict):
    """The rendered demo domain: a procedural world with exact ground truth (not real photos)."""

    # The pool the demo's rounds draw from: 3 rounds of rounds.images_per_round, plus spare.
    n_train: int = Field(320, ge=1)
    # 192 gold images (~96 in the shifted look, ~1,500 pairs): with 64, two runs of one config differed by
    # up to 5 points on the held-out family and a look's cost on 31 shifted images was lost in the noise.
    # Scoring gold is cheap next to training (~10 s per model here).
    n_gold: int = Field(192, ge=1)
    image_size: int = Field(192, ge=32)
    n_corrupt: int = Field(1, ge=0)
    # Scene difficulty (sim/render.py STYLES): "demo" is what the shipped CPU-trained checkpoint learned;
    # "full" has more, smaller objects, more crowds and clutter.
    style: Literal["demo", "full"] = "demo"
    # Share of the images (train pool and gold alike, drawn per image) rendered in a shifted look: other
    # backgrounds and lighting, same concepts (sim/render.py SHIFTED_LOOK). Their media domain is
    # "rendered-shapes-shifted"; the shipped checkpoint never saw it, so the demo shows retraining adapt.
    shifted_share: float = 0.5

    @field_validator("shifted_share")
    @classmethod
    def _share_in_unit_interval(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(
                f"must be a share between 0 and 1 (of images rendered in the shifted look), got {v!r}"
            )
        return v


class MediaConfig(_Strict):
    """Where the pool comes from: the rendered world (`sim`) or a folder / glob of images (`files`)."""

    source: Literal["sim", "files"] = "sim"
    world_dir: str = "world"  # relative paths resolve against the run's workspace
    sim: SimWorldConfig = SimWorldConfig()
    # source == files: a folder of images, an fsspec glob (s3://bucket/pool/**/*.jpg) or a .txt list of URIs
    uri: str | None = None
    gold_json: str | None = None  # SA-Co/Gold JSON of the gold split when source == files

    @model_validator(mode="after")
    def _files_need_uri(self) -> MediaConfig:
        if self.source == "files" and not self.uri:
            raise ValueError(
                "media.uri is required when media.source is 'files' (a folder, an fsspec glob or a .txt list of images)"
            )
        return self


class OntologyConfig(NPProposalSettings):
    path: str | None = None  # YAML concept graph; the sim world writes its own
    # Real pools: captions precomputed by your captioner, {"file name, URI or media_id": ["np", ...]} (the demo
    # uses an oracle).
    captions_path: str | None = None
    # Where positive candidates come from, one key: "file" (captions_path; the default when it is set),
    # "model" (captioner_model, an image-text-to-text checkpoint folder or hub id, describes each image and
    # the phrases the ontology parses are kept) or "ontology" (no captioner: concepts drawn from the ontology
    # for SAM 3 and the verifiers to ground or reject). Unset on the rendered world: its oracle captioner.
    captioner: Literal["file", "model", "ontology"] | None = None
    captioner_model: str | None = None
    captioner_device: str = "cpu"
    captioner_recall: float = Field(0.8, ge=0, le=1)
    captioner_noise: float = Field(0.1, ge=0, le=1)
    # negative_share, hard_negative_share, max_nps_per_image, focus_concepts, focus_weight: NPProposalSettings
    stage: StageConfig = StageConfig(batch_size=16)

    @model_validator(mode="after")
    def _captioner_has_what_it_reads(self) -> OntologyConfig:
        if self.captioner == "file" and not self.captions_path:
            raise ValueError(
                "ontology.captioner is 'file', so set ontology.captions_path (your captions JSON)"
            )
        if self.captioner == "model" and not self.captioner_model:
            raise ValueError(
                "ontology.captioner is 'model', so set ontology.captioner_model (an image-text-to-text "
                "checkpoint folder or hub id, e.g. Qwen/Qwen2.5-VL-7B-Instruct)"
            )
        return self

    @property
    def positives_from(self) -> str | None:
        """The captioner in force: the one chosen, else the captions file when one is named, else None
        (the rendered world's oracle)."""
        return self.captioner or ("file" if self.captions_path else None)


class Sam3Config(MaskProposalSettings):
    # A save_pretrained folder (relative to the workspace) or a hub id, `facebook/sam3[@revision]`, fetched once
    # into the Hugging Face cache (HF_HOME, HF_TOKEN, HF_HUB_OFFLINE): engine/model_refs.py.
    model: str = "models/sam3"
    # device, score_threshold, max_masks: MaskProposalSettings
    # CPU: decode + resize ahead of the model. Its actors and the model's must leave a CPU share free for
    # Ray Data's own tasks, or two chained pools on a 2-core box wait on each other forever.
    decode_stage: StageConfig = StageConfig(batch_size=32, num_cpus=0.25)
    stage: StageConfig = StageConfig(batch_size=32, num_cpus=0.75)


class VerifierConfig(VerificationSettings):
    # backend (VerificationSettings, with device, dtype, infer_batch_size, view_size, openai, vllm):
    # transformers: in-process; vllm: in-process on a GPU (`conceptengine[vllm]`); openai: any
    # OpenAI-compatible server with logprobs (`verifier.openai`). stage.num_gpus is each actor's GPU share.
    # Any AutoModelForImageTextToText (a folder or a hub id, as sam3.model), or a grounded MV scorer's
    # checkpoint (verifiers/grounded); a grounded scorer answers its own task only, so ev_model is then
    # an MLLM or a grounded EV scorer.
    model: str = "models/verifier"
    ev_model: str | None = None  # EV's own checkpoint (folder or hub id); None = `model` for both MV and EV
    # Two actors: Ray gives an actor of at most one CPU one torch thread, and this step runs alone, so one
    # actor would leave the second core of a 2-core laptop idle (the demo's step: 63 s with one). 0.5 CPU
    # each, as a step's pools may reserve at most half the CPUs (engine/runner.py); each still computes on
    # a whole core. On a GPU, one actor per GPU (num_gpus: 1) instead.
    stage: StageConfig = StageConfig(batch_size=16, num_cpus=0.5, concurrency=2)

    @model_validator(mode="after")
    def _openai_needs_a_model(self) -> VerifierConfig:
        if self.backend == "openai" and not self.openai.model:
            raise ValueError(
                "verifier.openai.model is required when verifier.backend is 'openai' "
                "(the served model name; GET <base_url>/models lists them)"
            )
        return self


class GoldConfig(_Strict):
    nps_per_image: int = Field(8, ge=1)
    negative_share: float = Field(0.5, ge=0, lt=1)
    # Concepts (ontology node names) reported as their own gold group, e.g. ones held out of pre-training.
    report_concepts: list[str] = []
    # A media domain (MEDIA.domain) reported as its own gold group (domain_cgF1), e.g. a shifted domain the
    # model is being adapted to; `seen_cgF1` scores the pairs in neither this domain nor report_concepts.
    report_domain: str | None = None


class RetrainConfig(_Strict):
    """Fine-tune SAM 3 on everything committed so far, on a cadence; promote only if gold cgF1 improves."""

    enabled: bool = True
    every_rounds: int | None = Field(1, ge=1)  # retrain after every k-th round ...
    min_new_pairs: int | None = Field(None, ge=1)  # ... or once this many pairs were committed since the last
    # Sized on the demo: 150 steps take ~40 s on 2 CPU cores; fewer barely move the held-out family, more
    # cost seen concepts (README, "What the demo shows today", and docs/demo-loop-measurements.md).
    steps: int = Field(150, ge=1)
    batch_size: int = Field(4, ge=1)
    max_nps_per_image: int = Field(6, ge=1)
    lr: float = Field(2e-4, gt=0)
    # Committed data is ~90% negative pairs. Fine-tuning a checkpoint trained on another mix on it shifts
    # its presence prior toward "absent" (the demo SAM 3, trained 50/50, lost half its gold cgF1 in 40
    # steps). Cap each image's negatives at this share of its pairs; null trains on the committed mix as it
    # is (right for a checkpoint trained on SA-Co's mix, such as facebook/sam3).
    max_negative_share: float | None = Field(0.5, gt=0, lt=1)
    # Replay of base data. Committed data is small and skewed toward what the rounds focused on (a new
    # concept family, a shifted domain), so a fine-tune on it alone can forget what the checkpoint knew.
    # replay_annotations: an ANNOTATIONS Parquet file or directory (media_id, uri, width, height,
    # noun_phrase, masks, is_negative, ...) of data the checkpoint was trained on, e.g. a slice of SA-Co/HQ;
    # a relative path resolves against the config's folder. replay_share: about this share of the images a
    # fine-tune samples are drawn from it (0 = no replay). Replay pairs are capped by max_negative_share too.
    # `conceptengine demo` replays the first images of the shipped checkpoint's own training world.
    replay_annotations: str | None = None
    replay_share: float = Field(0.0, ge=0, lt=1)
    # Each pass over the committed images comes with fresh replay images, as far as the replay set has them:
    # the same share, several times the distinct base data (see TrainSam3Config.replay_spread).
    replay_spread: bool = True
    # Refit the candidate's operating point (its presence-logit shift) on the first this-many replay images
    # before promotion; 0 = off. A fine-tune retrains the presence head away from the shift its init was
    # calibrated with: on the demo, one fine-tune cost seen concepts 13.2 -> 10.8 gold cgF1 and the refit
    # (+0.5) brought them to 13.8, the shifted look unchanged (11.8). Needs replay_annotations.
    presence_fit_images: int = Field(0, ge=0)
    presence_fit_offsets: list[float] | None = Field(None, min_length=1)  # None: the trainer's default
    # A new look (backgrounds, lighting) is learned in the vision tower: frozen, the same fine-tune raised the
    # shifted look only to 4.0 (7.6 trained). The demo's CNN backbone costs little to train.
    freeze_vision: bool = False
    # Keep the text tower (text encoder + projection) as the checkpoint has it. Detector training washes
    # attribute words out of an unfrozen text tower within a few hundred steps (colour phrases end at
    # cosine 0.99 to each other); the demo recipe's `--freeze-text` trains with it frozen the same way.
    freeze_text: bool = False
    # Train the vision backbone at lr x this (the neck and detector at lr). The demo recipe trains its
    # detector with the backbone at 0.1, so the shapes stage 1 taught survive; a fine-tune can keep that.
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)
    # Train the text encoder's token embeddings at lr x this: the words of a family the checkpoint never saw
    # start near their random init, and at the detector's rate a short fine-tune barely moves them.
    token_embedding_lr_scale: float = Field(1.0, gt=0, le=100)
    # Keep the token embeddings of the words the replay data uses (words the checkpoint knows) as they are, so
    # only new words learn: a fine-tune that moves known words blurs the concepts they name. Needs replay.
    freeze_replay_tokens: bool = False
    # Weight-space ensembling (WiSE-FT): the candidate is base + merge_alpha * (fine-tune - base), before its
    # operating point is refitted; 1.0 = the plain fine-tune. On the demo one fine-tune scored gold 16.39
    # plain and 18.24 at 0.5 (base 17.58): the plain one lost 4 points on seen concepts (README).
    merge_alpha: float = Field(0.5, ge=0, le=1)
    num_workers: int = Field(0, ge=0)  # Ray Train workers; 0 trains in the driver's process
    use_gpu: bool = False

    @model_validator(mode="after")
    def _one_cadence(self) -> RetrainConfig:
        if self.enabled and self.every_rounds is None and self.min_new_pairs is None:
            raise ValueError("retrain needs a cadence: set retrain.every_rounds or retrain.min_new_pairs")
        if self.replay_share > 0 and not self.replay_annotations:
            raise ValueError(
                f"retrain.replay_share is {self.replay_share} but retrain.replay_annotations is not set: "
                "name the base data to replay (an ANNOTATIONS Parquet path), or set retrain.replay_share to 0"
            )
        if self.freeze_replay_tokens and not self.replay_annotations:
            raise ValueError(
                "retrain.freeze_replay_tokens is true but retrain.replay_annotations is not set: the words to "
                "keep are the replay data's; name it, or set freeze_replay_tokens to false"
            )
        if self.presence_fit_images and not self.replay_annotations:
            raise ValueError(
                f"retrain.presence_fit_images is {self.presence_fit_images} but retrain.replay_annotations is "
                "not set: the operating point is fitted on base data; name it, or set presence_fit_images to 0"
            )
        return self


class VerifierRetrainSchedule(_Strict):
    """Fine-tune the MV / EV verifiers on every human verdict so far, on a cadence (LoRA by default);
    promote a task's candidate only if it agrees better with the humans on held-out images (lower NLL).

    A promoted verifier is a new version: its scores mean something new, so calibrated routing starts
    over for it (the next round's items of that task go to humans). Retrain rarely enough to pay that.
    """

    enabled: bool = True
    every_rounds: int | None = Field(3, ge=1)  # after every k-th round ...
    min_new_verdicts: int | None = Field(None, ge=1)  # ... or once this many human verdicts came in since
    min_examples: int = Field(32, ge=1)  # a task with fewer human verdicts is not retrained
    tasks: list[Literal["mv", "ev"]] = Field(["mv", "ev"], min_length=1)  # which verifiers are retrained
    steps: int = Field(60, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0)
    lora: bool = True
    num_workers: int = Field(0, ge=0)  # Ray Train workers; 0 trains in the driver's process
    use_gpu: bool = False

    @model_validator(mode="after")
    def _one_cadence(self) -> VerifierRetrainSchedule:
        if self.enabled and self.every_rounds is None and self.min_new_verdicts is None:
            raise ValueError(
                "verifier_retrain needs a cadence: set verifier_retrain.every_rounds or min_new_verdicts"
            )
        return self


class RoundsConfig(_Strict):
    count: int = Field(3, ge=1)
    # 100 for the demo: a fine-tune overfits a small commit (more steps on 40 images made every gold group
    # worse). Two demo runs at 100: shifted +10.6 / +10.4, held-out family +10.2 / +12.3, seen concepts
    # -1.3 / -2.5; one at 80: +8.6 / +14.5 / -3.3, about a minute faster (README).
    images_per_round: int = Field(100, ge=1)


class EngineConfig(_Strict):
    """Top of the tree: everything a run needs, snapshotted into RUN/run.json."""

    seed: int = 0
    runner: Literal["ray", "local"] = "ray"
    # An existing Ray cluster to join (Ray's own address forms: "auto", "HOST:6379", "ray://HOST:10001");
    # None: the RAY_ADDRESS environment variable when set, else a private Ray on this machine. A joined
    # cluster's resources are its own (with an address, ray_num_cpus is refused when the run starts): every
    # node needs this package installed and the run's models and media at the same paths (or shared storage).
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(None, ge=1)  # the private Ray's CPUs (None: all of this machine's)
    media: MediaConfig = MediaConfig()
    ontology: OntologyConfig = OntologyConfig()
    rounds: RoundsConfig = RoundsConfig()
    sam3: Sam3Config = Sam3Config()
    verifier: VerifierConfig = VerifierConfig()
    routing: RoutingConfig = RoutingConfig()
    review: ReviewSettings = ReviewSettings()
    gold: GoldConfig = GoldConfig()
    retrain: RetrainConfig = RetrainConfig()
    verifier_retrain: VerifierRetrainSchedule = VerifierRetrainSchedule()

    @model_validator(mode="after")
    def _files_need_an_ontology_captions_and_gold(self) -> EngineConfig:
        # The rendered world brings its own concept graph, oracle captioner and gold split; a team's pool brings
        # none of them, and without them a run would only fail after round 0 had run.
        if self.media.source == "files":
            missing = [
                f"{key} ({what})"
                for key, value, what in (
                    ("ontology.path", self.ontology.path, "your concept graph YAML"),
                    (
                        "ontology.captions_path",
                        self.ontology.captions_path or self.ontology.captioner in ("model", "ontology"),
                        (
                            'your captioner\'s output, {"file name": ["noun phrase", ...]}; or ontology.captioner: '
                            "model (with ontology.captioner_model) or ontology (no captions)"
                        ),
                    ),
                    ("media.gold_json", self.media.gold_json, "SA-Co/Gold JSON of your gold split"),
                )
                if not value
            ]
            if missing:
                listed = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
                raise ValueError(f"media.source is 'files', so set {listed}")
        return self

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", c) with c parsed as YAML, so numbers, booleans and lists keep their types."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set rounds.count=3")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {item!r}: the key before '=' is empty")
    return key.strip(), yaml.safe_load(raw) if raw != "" else ""


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key (check the spelling; see configs/demo.yaml for valid keys)")
        elif e["type"] == "value_error":
            # The engine's own validators: their messages name the keys to fix already.
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(msg if not e["loc"] or msg.startswith(f"{path}.") else f"{path}: {msg}")
        else:
            lines.append(f"{path}: {e['msg']}")
    return f"invalid config {source}:\n  " + "\n  ".join(lines)


def load_yaml_model(
    path: str | Path | None, overrides: list[str] | None, model: type[M], what: str = "config"
) -> M:
    """YAML (or nothing: the model's defaults) + `a.b=c` overrides -> a validated `model`; every error is a
    ConfigError naming the key to fix. Run configs and training configs load alike."""
    tree: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{what} file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} file {p} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{what} file {p} must hold a mapping at the top level")
        tree = loaded or {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EngineConfig:
    """The run config: YAML (or the defaults when path is None), overrides applied, validated."""
    return load_yaml_model(path, overrides, EngineConfig)

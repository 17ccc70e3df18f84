"""Typed settings loaded from the one YAML file (config/default.yaml).

Every component takes a `Settings` (or one of its sections) instead of reading
files or environment variables of its own, so one value changes everything downstream.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataSettings(_Section):
    """Size of the synthetic data (any schema) and the validation split; what the features
    are lives in the schema (config/schemas/)."""

    seed: int = 7
    num_users: int = Field(3000, ge=10)
    num_items: int = Field(1500, ge=10)
    impressions_per_user: int = Field(40, ge=2)
    latent_dim: int = Field(8, ge=1)
    popularity_skew: float = Field(1.1, ge=0.0)
    missing_rate: float = Field(0.1, ge=0.0, lt=1.0)  # default for nullable features
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split: Literal["time", "leave_last_n"] = "time"
    leave_last_n: int = Field(10, ge=1)  # per user, for split: leave_last_n


class TrainingSettings(_Section):
    seed: int = 11
    embedding_dim: int = Field(16, ge=2)
    tower_dim: int = Field(32, ge=2)
    retrieval_epochs: int = Field(6, ge=1)
    ranking_epochs: int = Field(4, ge=1)
    batch_size: int = Field(1024, ge=8)
    learning_rate: float = Field(0.005, gt=0.0)
    recall_k: int = Field(50, ge=1)
    # Retrieval: the query tower pools the user's latest `history_length` items; the
    # served score adds `popularity_prior_weight` x log recent popularity, decayed with a
    # half-life of `popularity_half_life` of the training window (see training/models.py).
    history_length: int = Field(50, ge=1)
    temperature: float = Field(0.1, gt=0.0)
    popularity_prior_weight: float = Field(3.0, ge=0.0)
    popularity_half_life: float = Field(0.05, gt=0.0, le=10.0)
    # INT8 ranking model (dynamic quantisation of the DLRM's MLPs, training/quantize.py):
    # exported only if its validation AUC differs from the float model's by at most
    # `quantize_auc_tolerance`; both AUCs and the speed-up land in metrics.json either way.
    quantize_ranking: bool = False
    quantize_auc_tolerance: float = Field(0.002, ge=0.0, le=1.0)


class QueuePolicySettings(_Section):
    """Triton's per-model queue policy (dynamic_batching.default_queue_policy), the same for
    every stage. Without a bound, overload only makes every queue longer and every answer
    later; with one, a request that cannot be served in time is rejected at once with
    UNAVAILABLE (HTTP 503), which clients retry with backoff (docs/errors.md)."""

    # Requests waiting per model beyond this are rejected on arrival; 0 is unbounded.
    max_queue_size: int = Field(16, ge=0)
    # A request still queued after this long is rejected (REJECT) or deprioritised (DELAY);
    # 0 means no timeout.
    default_timeout_microseconds: int = Field(1_000_000, ge=0)
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    # Let a request ask for a shorter (or longer) queue timeout with the `timeout` parameter.
    allow_timeout_override: bool = True


class HnswSettings(_Section):
    m: int = Field(32, ge=4, le=256)  # graph degree: recall and memory grow with it
    ef_construction: int = Field(64, ge=8)
    ef_search: int = Field(256, ge=1)  # stored in the index file; served as built


class IvfSettings(_Section):
    nlist: int = Field(0, ge=0)  # inverted lists; 0 = 4 x sqrt(catalog size)
    nprobe: int = Field(16, ge=1)  # lists searched per query; stored in the index file


class IndexSettings(_Section):
    """The item index retrieval searches, built with the model set (training/index.py).

    exact is faiss.IndexFlatIP; hnsw and ivf are approximate inner-product indexes whose
    recall@num_candidates against exact search is measured at build time on the
    evaluation users' queries: a build below `min_recall` is refused."""

    type: Literal["exact", "hnsw", "ivf"] = "exact"
    hnsw: HnswSettings = HnswSettings()
    ivf: IvfSettings = IvfSettings()
    min_recall: float = Field(0.95, ge=0.0, le=1.0)


class ServingSettings(_Section):
    num_candidates: int = Field(100, ge=1)
    default_top_k: int = Field(10, ge=1)
    max_top_k: int = Field(100, ge=1)
    max_exclude: int = Field(1000, ge=0)
    # Training interactions kept per known user (the latest), shipped with each model set:
    # what it already consumed is not recommended again unless a request asks for it.
    history_length: int = Field(200, ge=0)
    # Session items a request may send (history_item_ids): pooled by the query tower
    # with the stored history, and filtered like it.
    max_history_items: int = Field(200, ge=0)
    # The served order is by log P(like) from ranking + retrieval_weight x the retrieval
    # score (log-odds of engaging): 0 orders by the ranking model alone.
    retrieval_weight: float = Field(1.0, ge=0.0)
    max_batch_size: int = Field(64, ge=1)
    max_queue_delay_microseconds: int = Field(0, ge=0)
    instance_count: int = Field(1, ge=1)
    instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    ranking_backend: Literal["python", "pytorch_libtorch"] = "python"
    torch_threads: int = Field(1, ge=1)
    queue_policy: QueuePolicySettings = QueuePolicySettings()
    index: IndexSettings = IndexSettings()


class ServerSettings(_Section):
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    bind_address: str = "127.0.0.1"
    model_control_mode: Literal["explicit", "poll", "none"] = "explicit"
    strict_readiness: bool = True
    exit_on_error: bool = True
    log_verbose: int = Field(0, ge=0)
    python_shm_default_byte_size: int = Field(16 * 1024 * 1024, ge=1024 * 1024)
    restricted_api_header: str = "triton-admin-key"


class MonitoringSettings(_Section):
    psi_threshold: float = Field(0.2, gt=0.0)
    ks_threshold: float = Field(0.1, gt=0.0, lt=1.0)
    min_count: int = Field(200, ge=1)
    # Share of served batches the live counters bin (counts scaled by 1/rate, so they stay
    # unbiased); below 1 trades counter precision for less work per request.
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)
    # Seconds between two sends of the buffered live counts to Triton's metrics API: each
    # counter increment is a stub-to-server round trip, kept off the request path. A
    # scrape lags the traffic by up to this long.
    flush_interval_s: float = Field(1.0, gt=0.0)


class Settings(_Section):
    # Which config/schemas/<name>.yaml (or a path to one) describes the data.
    feature_schema: str = "synthetic"
    data: DataSettings = DataSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    server: ServerSettings = ServerSettings()
    monitoring: MonitoringSettings = MonitoringSettings()


class SettingsError(ValueError):
    """A configuration file that cannot be used, with the file and field named."""


def load_settings(
    path: str | os.PathLike[str] | None = None, schema: str | None = None
) -> Settings:
    """Load settings from `path`, $RECSYS_CONFIG, or config/default.yaml, in that order;
    `schema` (or $RECSYS_SCHEMA) replaces the configured feature schema."""
    config_path = Path(path or os.environ.get("RECSYS_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {config_path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {config_path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"config file {config_path} must hold a mapping at the top level")
    schema = schema or os.environ.get("RECSYS_SCHEMA") or None
    if schema:
        raw["feature_schema"] = schema
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(f"config file {config_path} is invalid:\n{exc}") from exc

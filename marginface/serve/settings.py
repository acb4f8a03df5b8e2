"""Service settings: defaults, then a YAML config file, then ``MARGINFACE_*`` environment
variables, then explicit values (command-line flags), each overriding the one before.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from marginface.config import format_validation_error
from marginface.decision.rates import far_key
from marginface.errors import ConfigError, DataError, GalleryError
from marginface.gallery import default_gallery_url
from marginface.gallery.cluster import node_name
from marginface.streams.cluster import default_node_name
from marginface.streams.notify import MqttSettings, WebhookSettings
from marginface.streams.sources import SourcePolicy
from marginface.urls import parse_url

__all__ = ["DEFAULT_HOME", "ServeSettings", "load_settings"]

#: Where the admin key file and photos live for a server database unless configured otherwise.
DEFAULT_HOME = Path("~/.local/share/marginface")

ENV_PREFIX = "MARGINFACE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class ServeSettings(BaseSettings):
    """Everything ``marginface serve`` and :func:`marginface.serve.create_app` can be told.

    Environment variables are the field names in upper case with the ``MARGINFACE_`` prefix
    (``MARGINFACE_PORT=9000``); a YAML file given as ``config_file`` or ``MARGINFACE_CONFIG``
    holds the same keys in lower case.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_assignment=True,
        env_ignore_empty=True,
    )

    config_file: Path | None = Field(
        default=None, description="YAML file with any of these settings (lower-case keys)."
    )

    # Storage.
    db: str | None = Field(
        default=None,
        description="Gallery metadata store: a SQLite file path, sqlite:///PATH or "
        "postgresql://USER:PASS@HOST/DB; default: the gallery the CLI uses "
        "($MARGINFACE_GALLERY_URL or ~/.local/share/marginface/gallery.db).",
    )
    index: Literal["exact", "faiss", "milvus"] = Field(
        default="exact", description="Vector index: exact (numpy), faiss or milvus."
    )
    index_url: str | None = Field(
        default=None, description="Milvus URI (a local .db file for Milvus Lite or http://...)."
    )
    data_dir: Path | None = Field(
        default=None,
        description="Folder for the admin key file; default: the SQLite "
        "file's folder, or ~/.local/share/marginface for other stores.",
    )
    admin_key_file: Path | None = Field(
        default=None, description="Where the first admin key is written (mode 0600)."
    )

    # Models.
    model: str = Field(default="default", description="Embedder: built-in name or model path.")
    detector: str = Field(default="yunet", description="Face detector name.")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="Numeric precision of a model given as PyTorch weights (bf16: about twice "
        "as fast on CPUs with AVX512-BF16 or AMX; ONNX models such as SFace stay fp32).",
    )
    fpir: str | None = Field(
        default=None,
        description="Identification's operating point: the target false positive "
        "identification rate, the share of people who are not enrolled that a search "
        "identifies as someone. The threshold that meets it is derived from the model card's "
        "impostor calibration for the gallery's current size, and follows enrolments. "
        "Default: the target stored with the gallery (marginface gallery config --fpir), "
        "else 1e-2.",
    )
    far: str = Field(
        default="1e-3",
        description="Verification (1:1) target false-accept rate whose calibrated threshold "
        "is used.",
    )
    threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Explicit cosine threshold for identification and verification; overrides "
        "the target FPIR and FAR (for experts: its false-alarm rate grows with the gallery).",
    )
    top_k: int = Field(default=5, ge=1, le=100, description="Neighbours searched per face.")
    max_matches: int = Field(
        default=5, ge=1, le=100, description="Candidate subjects returned per face."
    )

    # Network.
    host: str = Field(default="127.0.0.1", description="Interface to bind (loopback only).")
    port: int = Field(default=8000, ge=0, le=65535)
    max_upload_mb: float = Field(
        default=20.0, gt=0, le=1024, description="Largest request body accepted (HTTP 413)."
    )
    max_photos: int = Field(default=20, ge=1, le=1000, description="Photos per enrol request.")
    workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Photos decoded and embedded in parallel (pipeline copies in this process).",
    )
    blas_threads: int | None = Field(
        default=1,
        ge=1,
        le=256,
        description="Threads of numpy's BLAS while the service runs (None: leave as found). "
        "Per-request gallery searches are small; a multi-threaded BLAS keeps its idle "
        "threads spinning and took a third of the CPU from the pipeline threads (measured "
        "29 -> 46 identify requests/s on 2 cores with 1).",
    )

    # Enrolment policy.
    multiple_faces: Literal["reject", "largest", "central"] = Field(
        default="reject",
        description="An enrolment photo showing several faces: reject it, take the largest, or "
        "take the one nearest the photo's centre (each request may choose otherwise).",
    )
    near_duplicate: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="A new face this close (cosine) to one the subject has is not stored again.",
    )

    # Privacy and events.
    store_photos: bool = Field(
        default=False,
        description="Keep the aligned face crop of each enrolled photo in the gallery (for "
        "review). Uploaded photos themselves are never written anywhere.",
    )
    review_crops: bool = Field(
        default=True,
        description="Keep the aligned crops of each stranger's best faces (a camera's unknown "
        "visits) for the review queue (/v1/unknowns, the page's Strangers card), so a person "
        "can see whom to assign; purged with the visit after retention_days. Off, strangers "
        "are grouped and counted by their embeddings only.",
    )
    events: bool = Field(default=True, description="Log every identification as an event.")
    recognise_candidates: bool = Field(
        default=False,
        description="Show recognise keys each face's candidates (runner-up names and scores) "
        "too. Off, a recognise key learns only the decision: the match, or unknown; the "
        "candidates name enrolled people and are for enrol and admin keys.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    # Camera streams (/v1/cameras, /v1/unknowns).
    cameras: bool = Field(
        default=True,
        description="Run the camera workers: every enabled camera is watched while the service "
        "runs (they restart with it). Off, cameras can still be configured but none runs.",
    )
    max_cameras: int = Field(
        default=32,
        ge=0,
        le=1000,
        description="Cameras this service runs at most (its capacity as a node; fewer when "
        "cpu_budget says so). Cameras configured beyond it (beyond the sum over the live nodes "
        "in a cluster) are refused with HTTP 409.",
    )
    media_roots: list[Path] = Field(
        default_factory=list,
        description="Folders whose video files cameras may read (a camera URL that is a path "
        "or file:// URL inside one of them, symbolic links and '..' resolved). Empty "
        "(default): no camera reads a local file; cameras are network streams (rtsp, rtsps, "
        "http, https) and push cameras. The CLI's `marginface watch` reads any file its user "
        "names.",
    )
    allowed_devices: list[str] = Field(
        default_factory=list,
        description="Webcams cameras may open, as N, webcam:N or /dev/videoN. Empty (default): "
        "none.",
    )
    retention_days: float | None = Field(
        default=30.0,
        gt=0,
        description="Camera visit events and strangers' faces and crops older than this many "
        "days are purged (hourly). None: kept for ever. Stranger crops are kept unless "
        "review_crops is off.",
    )
    webhooks: list[WebhookSettings] = Field(
        default_factory=list,
        description="Webhooks receiving every visit event (an HTTP POST each, signed with "
        "HMAC-SHA256 when a secret is set, retried with backoff): a list of objects with url, "
        "secret, events, timeout_s, max_attempts... In the environment: JSON, e.g. "
        'MARGINFACE_WEBHOOKS=\'[{"url": "https://hooks.example/in", "secret": "s3cret"}]\'.',
    )
    mqtt: MqttSettings | None = Field(
        default=None,
        description="An MQTT broker receiving visit events and each camera's retained state "
        "(topics <topic_prefix>/<camera>/...): an object with host, port, username, password, "
        "tls, topic_prefix, qos... In the environment: JSON, e.g. "
        'MARGINFACE_MQTT=\'{"host": "broker.lan", "port": 1883}\'. None: no MQTT.',
    )

    # The camera cluster (several services sharing one PostgreSQL gallery; docs/cluster.md).
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="This service's name as a node of the camera cluster, unique among the "
        "services sharing the gallery (a second live one of the name refuses to start). "
        "Default: the host name and the port, e.g. cams-1-8000.",
    )
    node_address: str | None = Field(
        default=None,
        max_length=2000,
        description="The URL at which the other nodes reach this one (they forward to it the "
        "requests that need one of its cameras: live view, pushed frames). Default: "
        "http://<host>:<port>, the machine's host name when host is 0.0.0.0 or ::.",
    )
    lease_ttl_s: float = Field(
        default=15.0,
        ge=1.0,
        le=600.0,
        description="How long a node's camera leases last without a heartbeat. A node that "
        "dies has its cameras run again by the others within about this plus a few seconds; "
        "a node cut off from the database stops its cameras before then.",
    )
    heartbeat_s: float | None = Field(
        default=None,
        gt=0.0,
        le=120.0,
        description="How often a node renews its leases (default: lease_ttl_s / 5).",
    )
    cpu_budget: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="The share of the machine's cores this node's cameras may use: it takes no "
        "more cameras than fit, at the CPU per camera it measures on itself.",
    )
    rebalance_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="A node holding more than its share hands one camera to a less loaded "
        "node at most this often (when a node joins, cameras move gradually).",
    )
    move_wait_s: float = Field(
        default=60.0,
        ge=0.0,
        le=3600.0,
        description="A camera moves when nobody is followed on it (between visits); after "
        "waiting this long for such a moment it moves all the same (its visits go on there).",
    )

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        """A node name follows the rules of every name in the gallery."""
        if value is None:
            return None
        try:
            return node_name(value)
        except GalleryError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("node_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        """An http(s) URL, without credentials (it is shown in /v1/nodes)."""
        if value is None:
            return None
        url = parse_url(value, schemes=("http", "https"), what="node address")
        if url.has_credentials:
            raise ValueError("the node address must not carry credentials")
        return url.text

    @field_validator("allowed_devices")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        """Each webcam as /dev/videoN (a ConfigError, a ValueError, names a bad one)."""
        return list(SourcePolicy.service(allowed_devices=value).allowed_devices or ())

    @property
    def source_policy(self) -> SourcePolicy:
        """What the service's cameras may read: network streams and push cameras, the files
        under ``media_roots`` and the webcams of ``allowed_devices``."""
        return SourcePolicy.service(self.media_roots, self.allowed_devices)

    @field_validator("far", "fpir", mode="before")
    @classmethod
    def _rate_text(cls, value: Any) -> Any:
        """Accept ``1e-3`` written as a YAML number as well as a string; a rate in (0, 1)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = repr(float(value))
        if isinstance(value, str):
            try:
                return far_key(value)
            except DataError as exc:
                raise ValueError(str(exc)) from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values, then the environment, then the YAML file named by either."""
        config_file = getattr(init_settings, "init_kwargs", {}).get("config_file")
        if config_file is None:
            config_file = os.environ.get(CONFIG_ENV) or None
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file is not None:
            path = Path(config_file).expanduser()
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    # Derived values.
    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file behind ``db``, or None for a server database."""
        url = self.db
        if url is None:
            url = default_gallery_url()
        if url.startswith("sqlite:///"):
            return Path(url[len("sqlite:///") :]).expanduser()
        if "://" in url:
            return None
        return Path(url).expanduser()

    @property
    def gallery_url(self) -> str:
        """``db`` as a URL the gallery understands."""
        path = self.sqlite_path
        if path is not None:
            return str(path)
        assert self.db is not None
        return self.db

    @property
    def home(self) -> Path:
        """The folder for the admin key file."""
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        path = self.sqlite_path
        return path.parent if path is not None else DEFAULT_HOME.expanduser()

    @property
    def key_file(self) -> Path:
        """Where the bootstrap admin key is written."""
        if self.admin_key_file is not None:
            return self.admin_key_file.expanduser()
        path = self.sqlite_path
        stem = path.stem if path is not None else "gallery"
        return self.home / f"{stem}.admin-key"

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def node_name(self) -> str:
        """The node's name: ``node``, else the host name and the port."""
        if self.node:
            return self.node
        return default_node_name(self.port)

    @property
    def advertised_address(self) -> str:
        """Where the other nodes reach this one (``node_address`` or the listening URL)."""
        if self.node_address:
            return self.node_address.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname() or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address a browser on this machine opens."""
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"


def load_settings(config_file: str | Path | None = None, **values: Any) -> ServeSettings:
    """Build settings from a config file, the environment and ``values`` (None values skipped).

    Raises :class:`ConfigError` naming every offending key.
    """
    explicit = {k: v for k, v in values.items() if v is not None}
    if config_file is not None:
        explicit["config_file"] = Path(config_file)
    try:
        return ServeSettings(**explicit)
    except ValidationError as exc:
        source = f"{config_file or os.environ.get(CONFIG_ENV) or 'settings'}"
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None

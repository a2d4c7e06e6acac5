"""Service configuration: the only module that reads the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.startup import SettingsError

AuthMode = Literal["jwks", "hs256", "unsigned"]
LogFormat = Literal["json", "console"]
CommaList = Annotated[list[str], NoDecode]
RoleMap = Annotated[dict[str, list[str]], NoDecode]

# Algorithms a JWKS (public key) may verify; symmetric ones and `none` never come from a key server.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
_MIN_SECRET_LENGTH = 32
CONNECTIONS_PER_WORKER = 3
ENGINE_CONNECTIONS = 3
# One slow search must not hold up every other request of the replica.
MIN_REQUEST_CONNECTIONS = 2


@dataclass(frozen=True, slots=True)
class PoolSize:
    """One connection pool: its size and the statement_timeout its connections are opened with; a pool for
    batch work (`batch`) plans every statement for its arguments (see service/pools.py)."""

    min_size: int
    max_size: int
    statement_timeout_ms: int
    batch: bool = False


def parse_role_map(text: str) -> dict[str, list[str]]:
    """`role=privilege|privilege,other-role=privilege` -> {role: [privileges]} (see the README)."""
    result: dict[str, list[str]] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        role, sep, privileges = entry.partition("=")
        names = [name.strip() for name in privileges.split("|") if name.strip()]
        if not sep or not role.strip() or not names:
            raise ValueError(f"FHIR_ROLE_MAP entry {entry!r} is not of the form role=privilege|privilege")
        result.setdefault(role.strip(), []).extend(names)
    return result


class Settings(BaseSettings):
    """Read once at start-up from `FHIR_*` variables and `DATABASE_URL`."""

    model_config = SettingsConfigDict(env_prefix="FHIR_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    host: str | None = None
    port: int = Field(default=8080, ge=0, le=65535)
    base_path: str = "/fhir"
    public_base_url: str | None = None
    # Bases under which absolute references are this service's own (`Type/id`), besides public_base_url.
    local_base_urls: CommaList = []
    data_dir: Path = Path(".data")

    auth_mode: AuthMode | None = None
    jwks_urls: CommaList = []
    jwt_issuers: CommaList = []
    jwt_audience: str | None = None
    jwt_algorithms: CommaList = ["RS256", "ES256"]
    jwt_leeway_seconds: int = Field(default=30, ge=0)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_min_refetch_seconds: float = Field(default=10.0, ge=0)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    hs256_secret: SecretStr | None = None
    role_map: RoleMap = {}

    reindex_workers: int = Field(default=2, ge=0)
    reindex_lease_seconds: float = Field(default=60.0, gt=0)
    reindex_poll_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # eHealth tokens list every privilege, so an Authorization header easily passes aiohttp's 8 KiB default.
    max_header_bytes: int = Field(default=64 * 1024, ge=8190)
    max_page_size: int = Field(default=1000, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    lock_timeout_ms: int = Field(default=5000, ge=1)
    # `DELETE [type]?search` matching several resources deletes them all; otherwise it is a 412.
    conditional_delete_multiple: bool = False
    # Entries of a batch or transaction Bundle (413 beyond): the size the loader writes per transaction.
    max_bundle_entries: int = Field(default=5000, ge=1)
    # Search limits (see "Search limits" in the README): parameters and comma-separated values per request,
    # and how long a search's statements may run before PostgreSQL cancels them.
    max_search_terms: int = Field(default=30, ge=1)
    max_search_values: int = Field(default=1000, ge=1)
    search_timeout_ms: int = Field(default=15000, ge=1)
    catalog_poll_seconds: float = Field(default=30.0, gt=0)
    # The replica's connections: the job engine's own pool (`job_pool_size`) and the rest for requests.
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=14, ge=1)
    # A request that finds every pooled connection busy for this long gets a 503 instead of queueing on.
    pool_acquire_timeout_ms: int = Field(default=3000, ge=1)
    # Server-side statement_timeout of each pool: requests, and the job engine's statements (batches, planning).
    statement_timeout_ms: int = Field(default=60_000, ge=1)
    job_statement_timeout_ms: int = Field(default=600_000, ge=1)
    job_retention_days: int = Field(default=30, ge=1)
    upkeep_interval_seconds: float = Field(default=3600.0, gt=0)
    # A pod's database may come up after it: connection failures are retried for this long at start.
    database_connect_timeout_seconds: float = Field(default=30.0, ge=0)

    shutdown_drain_seconds: float = Field(default=2.0, ge=0)
    shutdown_timeout_seconds: float = Field(default=6.0, ge=0)

    log_level: str = "INFO"
    log_format: LogFormat | None = None

    @field_validator("jwks_urls", "jwt_issuers", "jwt_algorithms", "local_base_urls", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("role_map", mode="before")
    @classmethod
    def _parse_role_map(cls, value: object) -> object:
        return parse_role_map(value) if isinstance(value, str) else value

    @field_validator("local_base_urls")
    @classmethod
    def _check_base_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            scheme, _, rest = url.partition("://")
            if scheme not in ("http", "https") or not rest.strip("/") or "?" in url or "#" in url:
                raise ValueError("every entry must be an absolute http(s) base URL such as https://fhir.example.org/fhir")
        return value

    @field_validator("base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        value = "/" + value.strip("/")
        return "" if value == "/" else value

    @model_validator(mode="after")
    def _deployment_defaults(self) -> Settings:
        # No DATABASE_URL means the one-command local run with embedded Postgres: bind to loopback and
        # accept unsigned tokens. A real deployment defaults to verified JWTs.
        if self.host is None:
            self.host = "0.0.0.0" if self.database_url else "127.0.0.1"
        if self.auth_mode is None:
            self.auth_mode = "jwks" if self.database_url else "unsigned"
        return self

    def problems(self) -> list[str]:
        """Every setting that cannot work, each naming its variable; empty when the service can start.

        Checked by `create_app`, so a server never starts with an authentication set-up that cannot verify a
        token; reading the settings alone (tools, chart tests) does not need one.
        """
        return self._auth_problems() + self._limit_problems()

    def _auth_problems(self) -> list[str]:
        found = []
        if self.auth_mode == "jwks":
            if not self.jwks_urls:
                found.append("FHIR_JWKS_URLS is empty but FHIR_AUTH_MODE is jwks (the default when DATABASE_URL is "
                             "set): set the Keycloak realm JWKS URL(s), or choose FHIR_AUTH_MODE=hs256")
            if not self.jwt_issuers:
                found.append("FHIR_JWT_ISSUERS is empty but FHIR_AUTH_MODE is jwks: set the accepted token "
                             "issuer(s), e.g. https://keycloak.example/realms/ehealth")
            if len(self.jwks_urls) > 1 and self.jwt_issuers and len(self.jwt_issuers) != len(self.jwks_urls):
                found.append(f"FHIR_JWT_ISSUERS has {len(self.jwt_issuers)} value(s) for {len(self.jwks_urls)} "
                             "FHIR_JWKS_URLS: with several key sets, give one issuer per JWKS URL in the same order, "
                             "so each issuer's tokens are verified with its own realm's keys only")
            if not self.jwt_algorithms or not set(self.jwt_algorithms) <= ASYMMETRIC_ALGORITHMS:
                found.append(f"FHIR_JWT_ALGORITHMS must be a non-empty subset of {sorted(ASYMMETRIC_ALGORITHMS)} "
                             f"in jwks mode, not {self.jwt_algorithms}")
        if self.auth_mode == "hs256":
            secret = self.hs256_secret.get_secret_value() if self.hs256_secret else ""
            if len(secret) < _MIN_SECRET_LENGTH:
                found.append(f"FHIR_HS256_SECRET is missing or shorter than {_MIN_SECRET_LENGTH} characters but "
                             f"FHIR_AUTH_MODE is hs256")
        return found

    def _limit_problems(self) -> list[str]:
        found = []
        if self.default_page_size > self.max_page_size:
            found.append(f"FHIR_DEFAULT_PAGE_SIZE ({self.default_page_size}) is above FHIR_MAX_PAGE_SIZE "
                         f"({self.max_page_size})")
        if self.lock_timeout_ms >= self.statement_timeout_ms:
            found.append(f"FHIR_LOCK_TIMEOUT_MS ({self.lock_timeout_ms}) must be below FHIR_STATEMENT_TIMEOUT_MS "
                         f"({self.statement_timeout_ms}), or a write waiting for a row times out instead of "
                         "answering 409")
        return found + self._pool_problems()

    def _pool_problems(self) -> list[str]:
        requests = self.pool_max_size - self.job_pool_size
        if requests < MIN_REQUEST_CONNECTIONS:
            return [f"FHIR_POOL_MAX_SIZE ({self.pool_max_size}) is too small: the job engine takes "
                    f"{self.job_pool_size} connections ({CONNECTIONS_PER_WORKER} per FHIR_REINDEX_WORKERS "
                    f"({self.reindex_workers}) and {ENGINE_CONNECTIONS} for listening and upkeep), which leaves "
                    f"{requests} for requests; set it to at least {self.job_pool_size + MIN_REQUEST_CONNECTIONS} "
                    "or lower FHIR_REINDEX_WORKERS"]
        if self.pool_min_size > requests:
            return [f"FHIR_POOL_MIN_SIZE ({self.pool_min_size}) is above the {requests} connections requests get "
                    f"(FHIR_POOL_MAX_SIZE ({self.pool_max_size}) less the job engine's {self.job_pool_size})"]
        return []

    @property
    def job_pool_size(self) -> int:
        """Connections of the job engine's pool, out of `pool_max_size`: a reindex worker reads a chunk on one
        connection while it writes on another, and its lease heartbeat borrows a third; the two LISTEN connections
        (jobs, search parameters) stay open; one more serves catalog refreshes and upkeep without waiting for a
        worker."""
        return CONNECTIONS_PER_WORKER * self.reindex_workers + ENGINE_CONNECTIONS

    def request_pool(self) -> PoolSize:
        """The pool requests use: what the job engine leaves of `pool_max_size`."""
        requests = self.pool_max_size - self.job_pool_size
        return PoolSize(min(self.pool_min_size, requests), requests, self.statement_timeout_ms)

    def job_pool(self) -> PoolSize:
        return PoolSize(ENGINE_CONNECTIONS, self.job_pool_size, self.job_statement_timeout_ms, batch=True)

    def probe_pool(self) -> PoolSize:
        """Readiness and metrics: one connection of their own, beside `pool_max_size`."""
        return PoolSize(1, 1, self.statement_timeout_ms)

    def operator_pool(self) -> PoolSize:
        """The one pool of an operator command (`load`, `reindex`, `migrate`): batch work, so the job timeout."""
        return PoolSize(self.pool_min_size, self.pool_max_size, self.job_statement_timeout_ms, batch=True)

    def jwks_urls_by_issuer(self) -> dict[str, tuple[str, ...]]:
        """Accepted issuer -> the JWKS URLs whose keys may sign its tokens: pairwise, or all issuers to the one
        URL when there is only one (`problems` refuses lists of different lengths)."""
        if len(self.jwks_urls) == 1:
            return {issuer: tuple(self.jwks_urls) for issuer in self.jwt_issuers}
        urls: dict[str, tuple[str, ...]] = {}
        for issuer, url in zip(self.jwt_issuers, self.jwks_urls, strict=False):
            urls[issuer] = (*urls.get(issuer, ()), url)
        return urls

    @property
    def local_bases(self) -> tuple[str, ...]:
        """This service's base URLs, without a trailing slash: absolute references under them are local."""
        bases = [*self.local_base_urls, *([self.public_base_url] if self.public_base_url else [])]
        return tuple(dict.fromkeys(url.rstrip("/") for url in bases))

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def load_settings() -> Settings:
    """The settings of this process, or every malformed one at once as a SettingsError (what the server
    itself needs is checked by `problems()` when it starts; `load` and `migrate` need no token set-up)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError([_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> str:
    """`VARIABLE: what is wrong`, never the value (it may be a secret)."""
    field = str(error["loc"][0]) if error["loc"] else ""
    name = "DATABASE_URL" if field == "database_url" else f"FHIR_{field.upper()}" if field else "settings"
    return f"{name}: {error['msg'].removeprefix('Value error, ')}"

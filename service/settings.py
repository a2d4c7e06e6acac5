"""Service configuration: the only module that reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AuthMode = Literal["jwks", "hs256", "unsigned"]
LogFormat = Literal["json", "console"]
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Read once at start-up from `FHIR_*` variables and `DATABASE_URL`."""

    model_config = SettingsConfigDict(env_prefix="FHIR_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    host: str | None = None
    port: int = Field(default=8080, ge=0, le=65535)
    base_path: str = "/fhir"
    public_base_url: str | None = None
    data_dir: Path = Path(".data")

    auth_mode: AuthMode | None = None
    jwks_urls: CommaList = []
    jwt_issuers: CommaList = []
    jwt_audience: str | None = None
    jwt_algorithms: CommaList = ["RS256", "ES256"]
    jwt_leeway_seconds: int = Field(default=30, ge=0)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_min_refetch_seconds: float = Field(default=10.0, ge=0)
    hs256_secret: str | None = None
    role_map: CommaList = []

    reindex_workers: int = Field(default=2, ge=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_page_size: int = Field(default=1000, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    lock_timeout_ms: int = Field(default=5000, ge=1)
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)

    shutdown_drain_seconds: float = Field(default=2.0, ge=0)
    shutdown_timeout_seconds: float = Field(default=6.0, ge=0)

    log_level: str = "INFO"
    log_format: LogFormat | None = None

    @field_validator("jwks_urls", "jwt_issuers", "jwt_algorithms", "role_map", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
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

    @property
    def embedded(self) -> bool:
        return self.database_url is None

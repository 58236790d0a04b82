"""Pydantic models of `hub.yaml`, the one file an admin owns.

Every model forbids unknown keys so a typo is an error, not a silently ignored setting. Credentials
are `SecretStr` and, when loaded from a file by `loader.load_config` (which validates with
`context={"strict_secrets": True, "base_dir": ...}`), must be written as `${ENV_VAR}` or
`{file: path}`; a literal secret is an error. Built in code (tests, other modules) any string is
accepted. Relative paths are resolved against the config file's directory.

Errors that concern a key other than the one pydantic is validating raise `FieldError` with the
sub-path, so the loader can name the exact key.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .defaults import (DEFAULT_HUBSPOT_PROPERTIES, DEFAULT_PLAYBOOKS, DEFAULT_SALESFORCE_FIELDS,
                       DEFAULT_SCORECARDS, DEFAULT_STORE_URL, DEFAULT_TICKET_TOPICS)
from .fields import (EnvText, FieldError, HttpUrl, Model, Name, Secret, Slug, check_database_url,
                     resolve_path, unique_names)

__all__ = ["DEFAULT_HUBSPOT_PROPERTIES", "DEFAULT_PLAYBOOKS", "DEFAULT_SALESFORCE_FIELDS",
           "DEFAULT_SCORECARDS", "DEFAULT_STORE_URL", "EnvText", "FieldError", "HUB_VALUES", "HubConfig"]


# -- store ---------------------------------------------------------------------------------------

class StoreConfig(Model):
    """Where the state store lives: any SQLAlchemy URL (SQLite file by default, or PostgreSQL)."""

    url: str = Field(DEFAULT_STORE_URL, repr=False)

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any, info: ValidationInfo) -> Any:
        return check_database_url(value, info)

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for display."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


# -- sources -------------------------------------------------------------------------------------


class SourceBase(Model):
    enabled: bool = True


class SalesforceAuth(Model):
    """Either a ready `access_token`, or an OAuth client with one of three grants."""

    access_token: Secret | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    token_url: HttpUrl = "https://login.salesforce.com/services/oauth2/token"
    grant: Literal["client_credentials", "refresh_token", "password"] | None = None
    refresh_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None

    @model_validator(mode="after")
    def _check_grant(self) -> "SalesforceAuth":
        oauth = [k for k in ("client_id", "client_secret", "refresh_token", "username", "password", "grant")
                 if getattr(self, k) is not None]
        if self.access_token is not None:
            if oauth:
                raise FieldError("give either access_token or an OAuth client, not both", oauth[0])
            return self
        if not oauth:
            raise FieldError("set access_token, or client_id + client_secret with a grant", "access_token")
        for key in ("client_id", "client_secret"):
            if getattr(self, key) is None:
                raise FieldError("is required for OAuth (or use access_token)", key)
        if self.grant is None:  # infer the grant when the given fields make it unambiguous
            grant = ("refresh_token" if self.refresh_token is not None else
                     "password" if self.username is not None else "client_credentials")
            object.__setattr__(self, "grant", grant)
        if self.grant == "refresh_token" and self.refresh_token is None:
            raise FieldError("is required for grant refresh_token", "refresh_token")
        if self.grant == "password":
            for key in ("username", "password"):
                if getattr(self, key) is None:
                    raise FieldError("is required for grant password", key)
        return self


class SalesforceSource(SourceBase):
    instance_url: HttpUrl
    auth: SalesforceAuth
    ca_cert: Path | None = None  # a CA bundle to trust (the sandbox's self-signed certificate)
    api_version: str = "59.0"
    objects: list[Name] | None = None  # sObjects to pull; None = the connector's default set
    fields: dict[Name, list[Name]] | None = None  # sObject -> fields to pull; None = the default fields
    daily_api_budget: int | None = Field(None, gt=0)  # stop pulling when this many calls were made today

    @field_validator("api_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        text = f"{value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if isinstance(text, str):
            text = text.strip().removeprefix("v")
            if not re.fullmatch(r"\d{2,3}\.0", text):
                raise PydanticCustomError("api_version", "must look like 59.0")
        return text

    @field_validator("ca_cert", mode="before")
    @classmethod
    def _ca(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value.strip():
            path = resolve_path(value.strip(), info)
            if not path.is_file():
                raise PydanticCustomError("file", "file not found: {path}", {"path": str(path)})
            return path
        return None if value in ("", None) else value


class HubSpotSource(SourceBase):
    base_url: HttpUrl = "https://api.hubapi.com"
    access_token: Secret  # a private app's access token


class ZendeskSource(SourceBase):
    subdomain: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    api_token: Secret
    base_url: HttpUrl | None = None  # default https://{subdomain}.zendesk.com

    @property
    def url(self) -> str:
        return self.base_url or f"https://{self.subdomain}.zendesk.com"


class StripeSource(SourceBase):
    api_key: Secret  # a restricted key with read access is enough
    base_url: HttpUrl = "https://api.stripe.com"


class UsageSource(SourceBase):
    """Product usage: a table in a SQLite file or any SQLAlchemy database, or a CSV file."""

    kind: Literal["sqlite", "csv"]
    path: Path | None = None
    url: str | None = Field(None, repr=False)  # a SQLAlchemy URL instead of a SQLite path
    table: Name = "usage_daily"
    account_column: Name = "workspace_id"
    day_column: Name = "day"
    metrics: list[Name] | None = None  # None = every numeric column
    accounts_table: Name | None = "workspaces"  # workspace -> name/domain/stripe id, for identity
    # the first sync (and a full refresh) reads only the last this-many complete days of usage
    # (day >= today - history_days); None reads the whole table. Later syncs go on from their cursor.
    history_days: int | None = Field(None, ge=1)

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any, info: ValidationInfo) -> Any:
        return resolve_path(value, info) if isinstance(value, str) and value.strip() else value

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any, info: ValidationInfo) -> Any:
        return check_database_url(value, info)

    @model_validator(mode="after")
    def _one_location(self) -> "UsageSource":
        if (self.path is None) == (self.url is None):
            raise FieldError("give exactly one of path or url", "path")
        if self.kind == "csv" and self.url is not None:
            raise FieldError("a csv source is read from a path", "url")
        return self


class Sources(Model):
    salesforce: SalesforceSource | None = None
    hubspot: HubSpotSource | None = None
    zendesk: ZendeskSource | None = None
    stripe: StripeSource | None = None
    usage: UsageSource | None = None

    def enabled(self) -> dict[str, SourceBase]:
        """The configured sources that are enabled, by name."""
        out = {name: getattr(self, name) for name in type(self).model_fields}
        return {name: src for name, src in out.items() if src is not None and src.enabled}

    @model_validator(mode="after")
    def _any(self) -> "Sources":
        if not self.enabled():
            raise ValueError("no source is enabled; configure at least one of "
                             + ", ".join(type(self).model_fields))
        return self


# -- targets -------------------------------------------------------------------------------------

HubValue = Literal["health_score", "tier", "previous_score", "trend", "churn_probability", "churn_reason",
                   "top_drivers", "playbook", "lifecycle_stage", "milestones", "expansion_signal",
                   "next_best_action", "unified_id", "last_computed_at"]
HUB_VALUES: tuple[str, ...] = HubValue.__args__  # type: ignore[attr-defined]



class TaskSettings(Model):
    enabled: bool = True
    owner: Literal["account_owner", "mapped_csm"] = "account_owner"
    csm_field: Name | None = None  # the account field holding the CSM user, for owner: mapped_csm
    close_when_cleared: bool = True  # close open hub tasks when their playbook no longer applies

    @model_validator(mode="after")
    def _csm(self) -> "TaskSettings":
        if self.owner == "mapped_csm" and not self.csm_field:
            raise FieldError("is required when owner is mapped_csm", "csm_field")
        return self


class TargetBase(Model):
    enabled: bool = True
    field_mappings: dict[str, str]
    conflict_policy: Literal["hub_wins", "crm_wins", "flag"] = "flag"
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    opt_out_field: Name | None = None  # a boolean account field; true = the hub never writes there

    # the CRM's rule for field names, set by each subclass
    FIELD_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r".+")
    FIELD_HINT: ClassVar[str] = ""

    @field_validator("field_mappings")
    @classmethod
    def _mappings(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for hub_value, crm_field in value.items():
            if hub_value not in HUB_VALUES:
                raise FieldError(f"unknown hub value {hub_value!r}; known: {', '.join(HUB_VALUES)}", hub_value)
            if not isinstance(crm_field, str) or not cls.FIELD_PATTERN.fullmatch(crm_field):
                raise FieldError(f"is not a valid field name ({cls.FIELD_HINT})", hub_value)
            if crm_field in seen:
                raise FieldError(f"{crm_field} is already mapped from {seen[crm_field]}", hub_value)
            seen[crm_field] = hub_value
        return value


class SalesforceTarget(TargetBase):
    field_mappings: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SALESFORCE_FIELDS))
    bulk_threshold: int = Field(2000, gt=0)  # more changed records than this go through Bulk API 2.0

    FIELD_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}(__c)?")
    FIELD_HINT: ClassVar[str] = "an API name such as Health_Score__c"


class HubSpotTarget(TargetBase):
    field_mappings: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_HUBSPOT_PROPERTIES))
    property_group: Slug = "retention_hub"

    FIELD_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"[a-z][a-z0-9_]{0,99}")
    FIELD_HINT: ClassVar[str] = "a lower-case internal name such as retention_health_score"


class Targets(Model):
    salesforce: SalesforceTarget | None = None
    hubspot: HubSpotTarget | None = None


# -- scoring -------------------------------------------------------------------------------------

Tier = Literal["green", "yellow", "red"]


class Tiers(Model):
    """Score cut-offs: score >= green is green, >= yellow is yellow, else red."""

    green: float = Field(70, ge=0, le=100)
    yellow: float = Field(40, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self) -> "Tiers":
        if self.green <= self.yellow:
            raise FieldError("must be greater than yellow", "green")
        return self


class Segment(Model):
    field: Name  # an account attribute, e.g. segment
    values: list[Name] = Field(min_length=1)


class Component(Model):
    """One scored signal. `thresholds` are ascending cut points that split the feature into
    len+1 bands scored evenly from 0 to 100 (reversed for lower_is_better); `method: percentile`
    scores by rank among all accounts instead."""

    name: Name
    weight: float = Field(gt=0)
    feature: Name
    direction: Literal["higher_is_better", "lower_is_better"]
    thresholds: list[float] | None = None
    method: Literal["percentile"] | None = None

    @model_validator(mode="after")
    def _one_method(self) -> "Component":
        if (self.thresholds is None) == (self.method is None):
            raise FieldError("give exactly one of thresholds or method: percentile", "thresholds")
        if self.thresholds is not None:
            if not self.thresholds:
                raise FieldError("needs at least one value", "thresholds")
            if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:])):
                raise FieldError("must be strictly increasing", "thresholds")
        return self


class Scorecard(Model):
    name: Name
    segment: Segment | None = None  # None = the fallback for accounts no other scorecard matches
    components: list[Component] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Scorecard":
        unique_names([c.name for c in self.components], "components", "name")
        return self




class TicketTopic(Model):
    """Tickets about one topic (e.g. pricing): any of these tags, or a subject containing any of these
    words (case-insensitive). Counted per account as the feature `<topic>_tickets_90d`."""

    tags: list[Name] = Field(default_factory=list)
    words: list[Annotated[str, Field(min_length=2)]] = Field(default_factory=list)


class Scoring(Model):
    horizon_days: int = Field(90, ge=7, le=730)  # churn within this many days is what is predicted
    tiers: Tiers = Field(default_factory=Tiers)
    # ticket topics that point at a churn reason (pricing -> price, export -> competitor)
    ticket_topics: dict[Name, TicketTopic] = Field(
        default_factory=lambda: {k: TicketTopic.model_validate(v) for k, v in DEFAULT_TICKET_TOPICS.items()})
    # at most this many new playbook tasks per CSM per week; the rest wait, ranked by ARR at risk
    tasks_per_csm_per_week: int = Field(15, ge=1, le=1000)
    model_path: str | None = None  # the fitted churn model (default: beside the store, .rhub/churn_model.joblib)
    scorecards: list[Scorecard] = Field(
        default_factory=lambda: [Scorecard.model_validate(s) for s in DEFAULT_SCORECARDS], min_length=1)

    @model_validator(mode="after")
    def _cards(self) -> "Scoring":
        unique_names([s.name for s in self.scorecards], "scorecards", "name")
        fallbacks = [i for i, s in enumerate(self.scorecards) if s.segment is None]
        if len(fallbacks) != 1:
            raise FieldError(f"exactly one scorecard must have no segment (the fallback); found "
                             f"{len(fallbacks)}", "scorecards")
        return self


# -- playbooks -----------------------------------------------------------------------------------


class When(Model):
    """Conditions, all of which must hold (an unset condition always holds)."""

    tier: list[Tier] | None = None
    reason: list[Name] | None = None  # likely churn reason, e.g. low_adoption, payment_failure
    segment: list[Name] | None = None
    days_to_renewal_lte: int | None = Field(None, ge=0)
    days_to_renewal_gte: int | None = Field(None, ge=0)
    score_lt: float | None = Field(None, ge=0, le=100)
    score_drop_gte: float | None = Field(None, gt=0, le=100)  # fall since the previous score
    churn_probability_gte: float | None = Field(None, ge=0, le=1)
    tier_change: Literal["down", "up"] | None = None  # tier worse (down) or better (up) than the last score
    lifecycle: list[Name] | None = None  # lifecycle stage, e.g. onboarding, renewal_window


TEMPLATE_FIELDS = ("name", "tier", "health_score", "previous_score", "churn_probability", "churn_reason",
                   "evidence", "drivers", "days_to_renewal", "renewal_date", "arr", "lifecycle", "playbook")


class Step(Model):
    """One CRM task. `subject` and `description` are str.format templates over TEMPLATE_FIELDS,
    e.g. "Renewal in {days_to_renewal} days: {name}"."""

    key: Slug  # stable: identifies the CRM task across runs
    subject: Annotated[str, Field(min_length=1, max_length=255)]
    description: str = ""
    due_in_days: int | None = Field(None, ge=0, le=365)
    due_in_hours: int | None = Field(None, ge=1, le=24 * 365)
    priority: Literal["high", "normal", "low"] = "normal"
    owner: Literal["csm", "manager"] = "csm"  # csm: the account's owner in the CRM; manager: config below

    @field_validator("subject", "description")
    @classmethod
    def _template(cls, value: str) -> str:
        import string

        try:
            names = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad template: {exc} (write {{{{ and }}}} for literal braces)") from None
        unknown = sorted(names - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(f"unknown template field {{{unknown[0]}}}; known: {', '.join(TEMPLATE_FIELDS)}")
        return value

    @model_validator(mode="after")
    def _due(self) -> "Step":
        if self.due_in_days is not None and self.due_in_hours is not None:
            raise FieldError("give due_in_days or due_in_hours, not both", "due_in_hours")
        if self.due_in_days is None and self.due_in_hours is None:
            self.due_in_days = 7
        return self


class Playbook(Model):
    name: Slug
    when: When = Field(default_factory=When)
    steps: list[Step] = Field(min_length=1)
    holdout_share: float = Field(0.1, ge=0, le=0.5)  # share of matching accounts left untreated
    # when the same account gets this playbook's tasks again: once per episode (the trigger must clear
    # first), once per renewal date, or once per calendar quarter while the trigger holds
    repeat: Literal["episode", "renewal", "quarter"] = "episode"
    budgeted: bool = True  # counts against scoring.tasks_per_csm_per_week (renewal preparation does not)

    @model_validator(mode="after")
    def _keys(self) -> "Playbook":
        unique_names([s.key for s in self.steps], "steps", "key")
        return self




# -- schedules -----------------------------------------------------------------------------------


class Schedule(Model):
    """A cron expression (5 fields, UTC unless `schedules.timezone` says otherwise) or an interval."""

    cron: str | None = None
    interval_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # checked here too so that an error in `sync: "..."` is reported at schedules.sync
        return {"cron": cls._cron(value)} if isinstance(value, str) else value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from apscheduler.triggers.cron import CronTrigger

        value = " ".join(value.split())
        if len(value.split(" ")) != 5:
            raise ValueError(f"a cron expression has 5 fields (minute hour day month weekday); "
                             f"{value!r} has {len(value.split())}")
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> "Schedule":
        if (self.cron is None) == (self.interval_minutes is None):
            raise ValueError("give a cron string or {interval_minutes: N}")
        return self


class Schedules(Model):
    timezone: str = "UTC"
    sync: Schedule | None = Field(default_factory=lambda: Schedule(interval_minutes=60))
    score: Schedule | None = Field(default_factory=lambda: Schedule(cron="15 5 * * *"))
    writeback: Schedule | None = Field(default_factory=lambda: Schedule(cron="45 5 * * *"))
    renewal_scan: Schedule | None = Field(default_factory=lambda: Schedule(cron="0 6 * * *"))
    report: Schedule | None = Field(default_factory=lambda: Schedule(cron="0 7 * * 1"))
    webhook_url: Secret | None = None  # posted a summary of failed runs; often holds a token, so a secret

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value

    def jobs(self) -> dict[str, Schedule]:
        """Scheduled jobs by name (a job set to null is not scheduled)."""
        names = ("sync", "score", "writeback", "renewal_scan", "report")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


# -- identity ------------------------------------------------------------------------------------


class Identity(Model):
    auto_accept: float = Field(0.9, ge=0, le=1)  # link records at or above this confidence
    review_threshold: float = Field(0.6, ge=0, le=1)  # between this and auto_accept: queued for review
    overrides_file: Path | None = None  # CSV of manual links: source, source_id, unified_id
    free_mail_domains: list[str] = Field(default_factory=list)  # added to the built-in list

    @field_validator("overrides_file", mode="before")
    @classmethod
    def _file(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value.strip():
            path = resolve_path(value.strip(), info)
            if not path.is_file():
                raise PydanticCustomError("file", "file not found: {path}", {"path": str(path)})
            return path
        return value

    @field_validator("free_mail_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        out = []
        for i, domain in enumerate(value):
            domain = domain.strip().lower().lstrip("@")
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain):
                raise FieldError("is not a domain name", i)
            out.append(domain)
        return out

    @model_validator(mode="after")
    def _order(self) -> "Identity":
        if self.review_threshold > self.auto_accept:
            raise FieldError("must not be above auto_accept", "review_threshold")
        return self


# -- the whole file ------------------------------------------------------------------------------


class HubConfig(Model):
    version: Literal[1] = 1
    env_file: str | None = None  # KEY=VALUE lines, relative to this file; read before ${VAR} expansion
    store: StoreConfig = Field(default_factory=StoreConfig)
    sources: Sources
    targets: Targets = Field(default_factory=Targets)
    scoring: Scoring = Field(default_factory=Scoring)
    playbooks: list[Playbook] = Field(
        default_factory=lambda: [Playbook.model_validate(p) for p in DEFAULT_PLAYBOOKS])
    schedules: Schedules = Field(default_factory=Schedules)
    identity: Identity = Field(default_factory=Identity)

    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The file this config was loaded from, if any."""
        return self._path

    @model_validator(mode="after")
    def _cross(self) -> "HubConfig":
        unique_names([p.name for p in self.playbooks], "playbooks", "name")
        for name in ("salesforce", "hubspot"):
            if getattr(self.targets, name) is not None and getattr(self.sources, name) is None:
                raise FieldError(f"writing to {name} needs sources.{name} (its credentials are used)",
                                 "targets", name)
        return self

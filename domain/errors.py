"""The domain's own error hierarchy; the HTTP layer and the CLI map these to codes in one place."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose.

    ``code`` is a stable machine-readable name; the message is for people.
    """

    code = "ledger_error"


class InvalidTransition(LedgerError):
    """A task was asked to move to a state its life cycle does not allow."""

    code = "invalid_transition"


class InvalidSubmission(LedgerError):
    """A task or graph submission is refused; nothing was stored."""

    code = "invalid_submission"


class UnknownTaskType(InvalidSubmission):
    code = "unknown_task_type"


class SchemaViolation(InvalidSubmission):
    code = "schema_violation"


class UnknownDependency(InvalidSubmission):
    code = "unknown_dependency"


class DependencyCycle(InvalidSubmission):
    code = "dependency_cycle"


class AdapterSettingsRefused(InvalidSubmission):
    """An ad-hoc task's adapter settings were refused by the adapter's checks (a policy
    refusal: the HTTP API records it as an ``AccessDenied`` event)."""

    code = "adapter_settings_refused"


class IdempotencyKeyTaken(LedgerError):
    """A graph names an idempotency key that a live task already holds."""

    code = "idempotency_key_taken"


class SingletonKeyTaken(InvalidTransition):
    """A graph (or ``enqueue_in``) names a singleton key that a live task already holds, or
    names one twice (one enqueue on its own is answered with the holder instead)."""

    code = "singleton_key_taken"


class UnknownQueue(LedgerError):
    code = "unknown_queue"


class UnknownSchedule(LedgerError):
    code = "unknown_schedule"


class InvalidSchedule(LedgerError):
    """A run-time schedule definition or backfill range that cannot be used (bad cron, time
    zone, task type, args, or too many ticks); nothing is recorded."""

    code = "invalid_schedule"


class TaskNotFound(LedgerError):
    code = "task_not_found"


class ConfigError(LedgerError):
    """The registry (configuration) is invalid. ``where`` names the offending key path."""

    code = "config_error"

    def __init__(self, message: str, where: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reason = message
        self.where = where


class Forbidden(LedgerError):
    """The principal's role does not allow this action."""

    code = "forbidden"


class InvalidQuery(LedgerError):
    """A read request with a bad filter, limit or cursor."""

    code = "invalid_query"

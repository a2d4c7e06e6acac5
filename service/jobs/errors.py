"""What a reindex worker does with an error, decided by its class (never by its message):

- transient (the connection went away, or another transaction won): the chunk is retried from its
  checkpoint, by any worker, up to the attempt limit;
- a resource's data (a value or row PostgreSQL refuses): the batch is split until the resource is alone,
  and it becomes one failure in the report (jobs/isolation.py);
- anything else from PostgreSQL is permanent (a missing privilege, a trigger that refuses): retrying
  cannot help, so the job fails at once with the SQLSTATE and message in its status."""

from __future__ import annotations

import asyncpg

TRANSIENT_ERRORS = (
    OSError,  # includes TimeoutError
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.InternalClientError,  # includes a statement cache outdated by a schema change
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError,  # 57P01-03
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.SerializationError, asyncpg.DeadlockDetectedError,  # 40001, 40P01
)
# Classes 22 (a value), 23 (a constraint) and 54 (e.g. an index row too large): about the data written.
RESOURCE_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)


def describe(error: BaseException) -> str:
    """One line for a status or a report: the SQLSTATE and message of a PostgreSQL error."""
    if isinstance(error, asyncpg.PostgresError):
        return f"SQLSTATE {error.sqlstate}: {error.message}"
    return f"{type(error).__name__}: {error}"

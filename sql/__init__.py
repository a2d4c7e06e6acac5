"""The numbered SQL migrations; installed as the package `service.sql` (see pyproject.toml)."""

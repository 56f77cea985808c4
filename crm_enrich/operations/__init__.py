"""What an operator can do: re-run and backfill requests and their runs,
reading a selection, scheduled re-verification, dead letters, and the
views of jobs, records and the dashboard."""

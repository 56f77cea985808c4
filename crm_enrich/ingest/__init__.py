"""Ways in that are processes of their own: the Change Data Capture
subscriber (`python -m crm_enrich.ingest.subscriber`, the Procfile's
`events:` line), which needs no inbound endpoint."""

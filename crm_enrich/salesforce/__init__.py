"""Salesforce: record ids, Outbound Message parsing and ACK, the API
gateway, the allocation guard, the batch queue and batched reads and
writes, the org's describe, and the SOQL we build."""

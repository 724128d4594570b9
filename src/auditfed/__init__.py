"""auditfed: one provable audit trail across services, data stores, pipelines and clouds.

The package is laid out by capability. Dependencies point inwards:

    api, cli  ->  ingest, sources, identity, query, detect, federation  ->  event, ledger, store

``event`` is the canonical event and its bytes, ``ledger`` the RFC 6962 Merkle log with
C2SP signed checkpoints, ``store`` the one storage interface (SQLite embedded,
PostgreSQL beyond one machine).
"""

__version__ = "0.1.0"

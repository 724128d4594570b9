"""Ingest: from a request body to durable, sequenced log entries.

``body`` decodes request bodies (JSON, arrays, NDJSON, gzip) within limits;
``prepare`` validates an event, binds it to the sender's credential and computes its
canonical bytes and leaf hash; ``sequencer`` appends prepared events to the log in
group commits and signs checkpoints. Only the sequencer writes the log.
"""

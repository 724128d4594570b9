"""The ``auditfed`` command line (DESIGN.md "CLI"): typer commands over the node and API."""

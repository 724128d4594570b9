"""``python -m auditfed.cli``: the same as the ``auditfed`` command."""

from auditfed.cli.main import main

main()

"""``python -m auditfed.detect [RULES...]``: compile Sigma rules, report refusals."""

from auditfed.detect.tooling import main

raise SystemExit(main())

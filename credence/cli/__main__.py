"""``python -m credence.cli``: the ``credence`` command."""

from credence.cli.app import main

raise SystemExit(main())

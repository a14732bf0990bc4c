"""``python -m raspy`` is the ``raspy`` command."""
from raspy.cli import main

raise SystemExit(main())

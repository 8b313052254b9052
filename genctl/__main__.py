"""`python -m genctl ...` (and `torchrun -m genctl ...`) behave like the `genctl` script."""

from genctl.cli.main import main

raise SystemExit(main())

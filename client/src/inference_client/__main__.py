"""`python -m inference_client` runs the `infer` command line."""

from inference_client.cli import main

raise SystemExit(main())

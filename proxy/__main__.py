"""`python -m proxy` runs the `byok-proxy` command line."""

from proxy.cli import main

main()

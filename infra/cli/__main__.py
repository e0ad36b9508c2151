"""`python -m infra.cli`: the operator CLI."""

from infra.cli import main

main()

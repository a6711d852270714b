"""`python -m scitt_oci` is the `scitt-oci` command."""

from scitt_oci.cli import run

run()

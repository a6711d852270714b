"""Talking to a transparency service from outside: the SCRAPI client and the log auditor built on it.

Domain code (layer 2) beside the server-side log, not part of it: nothing here imports `scitt_oci.log`.
"""

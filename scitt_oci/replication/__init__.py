"""Replication of logs between instances (domain services): the mirror of another service's C2SP
tiled log, the witness of other logs, and the client that collects witness cosignatures."""

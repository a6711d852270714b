"""C2SP transparency-log formats (pure): signed notes, checkpoints, cosignatures, tiles, witness
requests and tlog-policy. Bytes and text in, values or typed errors out; no network, files or clock."""

"""Operations on a running system: audit, workflow replay, recording histories and
rebuilding the read models."""

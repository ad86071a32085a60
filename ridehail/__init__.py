"""ridehail: shared settings, database, geography and money types, CLI and dev stack."""

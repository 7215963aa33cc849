"""Model zoo: the registry of encoder kinds and named variants, checkpoints (safe loading, key
mapping), downloads and seeded weights."""

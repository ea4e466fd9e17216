"""Rule files as ops write them: schema, loading with positions, checks, rule tests, the live
source, explain and preview. No I/O beyond reading the files (an import contract keeps it so)."""

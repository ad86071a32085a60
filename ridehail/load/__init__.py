"""Load tools: the benchmark, its bare-Temporal baseline, the city simulation and the
scripted scenarios, sharing one HTTP client."""

"""The pipeline layer: recipes, corpus regeneration, releases, the one-command study and its
backends. It composes the domain packages (generators, vocoders, checkpoints, corpus, attribution,
benchmark); only the CLI and the conformance kit sit above it."""

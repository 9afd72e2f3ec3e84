"""One module per source format; each registers a :class:`~gazerm.data.loaders.base.SourceFormat`.

``gazerm.data.sources`` imports them all, so importing it fills the registry. ``sessions`` reads the
implicit-feedback session logs ``prepare`` joins in; it is not a preference source and registers nothing.
"""

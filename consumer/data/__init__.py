"""Classification data (TOML), shipped with the package and loaded by ``consumer.rules``."""

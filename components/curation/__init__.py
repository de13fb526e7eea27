"""Curation: the common sample format, shards, and (next) the data-engine stages."""

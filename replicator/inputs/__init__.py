"""The config file and the inventory: YAML with file/line locations, validation, JSON Schema."""

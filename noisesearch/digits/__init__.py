"""The built-in digits world: networks, data, training and shipped weights."""

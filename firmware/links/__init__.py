"""Data links to the hall agent (serial, MQTT) and the RL1 engine that runs over them."""
